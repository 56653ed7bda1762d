/** Names every Pomona component agrees on: labels, resources, taints, Secrets. */
import { randomUUID } from "node:crypto";

export const labels = {
  /** metal, cpu, cuda or vulkan. */
  accelerator: "pomona.dev/accelerator",
  /** e.g. M2-Ultra, or the CPU model on Linux. */
  chip: "pomona.dev/chip",
  /** Unified (or system) memory of the node in bytes, as a decimal string. */
  unifiedMemory: "pomona.dev/unified-memory",
  /** Marks a Node as an inference node run by a node-agent ("true"). */
  inferenceNode: "pomona.dev/inference-node",
  /** virtual (the agent registered the Node) or attached (a kubelet's Node). */
  nodeMode: "pomona.dev/node-mode",
  /** On ModelReplicas: the InferenceModel they belong to. */
  model: "pomona.dev/model",
  /** On Secrets the operator writes for the gateway. */
  gatewayConfig: "pomona.dev/gateway-config",
} as const;

export const annotations = {
  /** On Nodes: sha256 digests of the model files in the node's cache, comma-separated, so the scheduler can prefer them. */
  cachedModels: "pomona.dev/cached-models",
} as const;

/** Extended resource on a Node: bytes of memory models may use (the wired limit on a Mac). */
export const modelMemoryResource = "pomona.dev/model-memory";

/** Taint that keeps ordinary Pods off virtual inference nodes; replicas tolerate it implicitly. */
export const inferenceNodeTaint = { key: "pomona.dev/inference-node", value: "true", effect: "NoSchedule" } as const;

/** Namespace the operator, gateway and their Secrets live in unless told otherwise. */
export const defaultSystemNamespace = "pomona-system";

/** The Secret holding the token the gateway presents to node-agents (data key `token`). */
export const nodeTokenSecret = "pomona-node-token";

/** Lease name of operator leader election, in the system namespace. */
export const operatorLeaseName = "pomona-operator";

export const fieldManagers = {
  operator: "pomona-operator",
  nodeAgent: "pomona-node-agent",
} as const;

/**
 * Node identity (docs/security.md): the operator's CA signs each node-agent's serving certificate through
 * a CertificateSigningRequest with this signer name, and a client certificate for the gateway.
 */
export const nodeIdentity = {
  signerName: "pomona.dev/node-serving",
  /** Secret in the system namespace holding the CA (`ca.crt`, `ca.key`); only the operator reads it. */
  caSecret: "pomona-node-ca",
  /** Secret in the system namespace with the gateway's client certificate (`tls.crt`, `tls.key`, `ca.crt`). */
  gatewayClientSecret: "pomona-gateway-node-client",
  gatewayCommonName: "pomona-gateway",
  /** The common name a node's serving certificate carries. */
  nodeCommonName: (node: string) => `pomona-node:${node}`,
  /** Label on a node-agent's CertificateSigningRequests, naming the node. */
  nodeLabel: "pomona.dev/node",
} as const;

/** The `extra` a Pod's bound ServiceAccount token carries: the node the Pod runs on (Kubernetes ≥ 1.32). */
export const nodeNameExtra = "authentication.kubernetes.io/node-name";

/**
 * Node's flags for a component's main script. The operator runs with a young generation of 2 MiB per
 * semi-space instead of V8's 16: its peak RSS at 1,000 models fell from 248 to 149 MiB, with no CPU cost
 * measured side by side (docs/decisions.md, "The operator's young generation is 2 MiB per semi-space").
 * The chart's operator command (charts/pomona/templates/operator-deployment.yaml) repeats it.
 */
export const operatorNodeFlags = ["--max-semi-space-size=2"] as const;
/**
 * The gateway starts with an old generation of 128 MiB before its first full collection instead of the small
 * limit V8 derives from its small live heap: under load it promotes steadily, and the mark-compacts that
 * followed (about 5 per 10 s at 2,700 req/s, pauses up to 10-21 ms) were the longest stops of its event loop,
 * each delaying every request that arrived during it. With the flag there were none in 40 s of open-loop
 * load and the tail fell, side by side in three runs, for up to ~60 MiB more RSS under load (docs/decisions.md,
 * "The gateway's old generation starts at 128 MiB"). The chart's gateway command and the Dockerfile's CMD
 * repeat it.
 */
export const gatewayNodeFlags = ["--initial-old-space-size=128"] as const;
const nodeFlags = new Map<string, readonly string[]>([
  ["operator/main.ts", operatorNodeFlags],
  ["gateway/main.ts", gatewayNodeFlags],
]);
export const nodeFlagsFor = (main: string): readonly string[] => nodeFlags.get(main) ?? [];

/** An x-request-id is taken from a caller only when it is a plain token, so it cannot inject anything into logs. */
const PLAIN_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Fastify's `genReqId` for the gateway (a client's id) and the node-agent (the gateway's), so one request
 * carries one id through both logs; any other value is replaced by a fresh one.
 */
export function requestIdOf(req: { headers: Record<string, string | string[] | undefined> }): string {
  const given = req.headers["x-request-id"];
  return typeof given === "string" && PLAIN_REQUEST_ID.test(given) ? given : randomUUID();
}

/**
 * How the gateway stops a node's generation and keeps the connection (docs/node-agent.md, "Cancelling a
 * request"): each call carries a random id in `header`; `DELETE` of the id's path on the same node aborts
 * that call's generation, and the node ends its answer so the connection can carry the next call. Closing
 * the connection instead costs a new mutual-TLS handshake per cancel and, measured in the soak, native
 * memory in both processes.
 */
export const nodeCancel = {
  header: "x-pomona-cancel-id",
  route: "/requests/:id",
  path: (id: string) => `/requests/${id}`,
  /** What a node accepts as an id: a UUID fits; anything else leaves the call uncancellable by id. */
  idPattern: /^[A-Za-z0-9-]{16,64}$/,
} as const;
