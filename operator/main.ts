/**
 * The operator's entry point: client-node's KubeConfig without the generated API classes
 * (kube/kube-config-only.ts), then the operator itself (operator.ts).
 */
import "../kube/kube-config-only.ts";

await import("./operator.ts");
