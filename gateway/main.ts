/**
 * The gateway's entry point: client-node's KubeConfig without the generated API classes
 * (kube/kube-config-only.ts), then the gateway itself (gateway.ts).
 */
import "../kube/kube-config-only.ts";

await import("./gateway.ts");
