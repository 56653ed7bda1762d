/**
 * The node-agent's entry point: client-node's KubeConfig without the generated API classes
 * (kube/kube-config-only.ts), then the node-agent itself (node-agent.ts).
 */
import "../kube/kube-config-only.ts";

await import("./node-agent.ts");
