/**
 * Operator at scale, against a real local control plane:
 * 1. latency from `kubectl apply` of a model to its route in the gateway config
 *    (the bench plays the node-agent and marks the replica Ready as soon as it exists);
 * 2. convergence time and peak RSS of the operator for 1,000 InferenceModels over
 *    100 virtual nodes (every model Scheduled with its replica bound);
 * 3. compile + validate + publish time of a gateway config with 100,000 keys
 *    (in this process, with the operator's own code, into the real API server).
 * Run: node bench/operator-scale.ts
 */
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
} from "@kubernetes/client-node";
import { freePort, startControlPlane } from "../controlplane/local-control-plane.ts";
import {
  type ApiKey,
  CONFIG_DATA_KEY,
  coreSecretName,
  decodeCorePart,
  gatewayConfig,
  inferenceNodeTaint,
  labels,
  type ModelReplica,
  modelMemoryResource,
} from "../crds/api/index.ts";
import { compileGatewayConfig } from "../operator/gateway-config/compile.ts";
import { GatewayConfigPublisher } from "../operator/gateway-config/publish.ts";

const root = join(import.meta.dirname, "..");
const NODES = 100;
const MODELS = 1_000;
const KEYS = 100_000;
const ns = "bench";
const system = "bench-system";

const dir = mkdtempSync(join(tmpdir(), "pomona-bench-"));
const cp = await startControlPlane({ dir });
const kc = new KubeConfig();
kc.loadFromFile(cp.kubeconfigPath);
const core = kc.makeApiClient(CoreV1Api);
const leases = kc.makeApiClient(CoordinationV1Api);
const custom = kc.makeApiClient(CustomObjectsApi);
const kubectl = (args: string[], input?: string) =>
  execFileSync(cp.binaries.kubectl, args, {
    env: { ...process.env, KUBECONFIG: cp.kubeconfigPath },
    input,
    maxBuffer: 1 << 30,
  }).toString();

kubectl(["apply", "--server-side", "-f", join(root, "crds")]);
kubectl(["wait", "--for=condition=Established", "--timeout=60s", "crd/inferencemodels.pomona.dev"]);
for (const n of [ns, system]) await core.createNamespace({ body: { metadata: { name: n } } });

// Virtual nodes, as node-agents in virtual mode register them.
const nodeNames = Array.from({ length: NODES }, (_, i) => `bench-node-${i}`);
const renew = async (name: string) => {
  const now = new V1MicroTime();
  const body = {
    metadata: { name },
    spec: { holderIdentity: name, leaseDurationSeconds: 40, renewTime: now },
  };
  try {
    const l = await leases.readNamespacedLease({ name, namespace: "kube-node-lease" });
    await leases.replaceNamespacedLease({
      name,
      namespace: "kube-node-lease",
      body: { ...body, metadata: { ...body.metadata, resourceVersion: l.metadata?.resourceVersion } },
    });
  } catch {
    await leases.createNamespacedLease({ namespace: "kube-node-lease", body });
  }
};
for (const name of nodeNames) {
  await renew(name);
  await core.createNode({
    body: {
      metadata: { name, labels: { [labels.inferenceNode]: "true" } },
      spec: { taints: [{ ...inferenceNodeTaint }] },
    },
  });
  await core.patchNodeStatus(
    {
      name,
      body: {
        status: {
          allocatable: { [modelMemoryResource]: "64Gi" },
          capacity: { [modelMemoryResource]: "64Gi" },
          conditions: [
            {
              type: "Ready",
              status: "True",
              reason: "Bench",
              message: "bench node",
              lastHeartbeatTime: new Date(),
              lastTransitionTime: new Date(),
            },
          ],
        },
      },
    },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}
const renewal = setInterval(() => {
  for (const n of nodeNames) void renew(n).catch(() => {});
}, 10_000);

// The operator, as a child process; its RSS sampled from /proc.
const port = await freePort();
const operator = spawn(process.execPath, [join(root, "operator/main.ts")], {
  env: { ...process.env, KUBECONFIG: cp.kubeconfigPath, POMONA_NAMESPACE: system, POMONA_OPERATOR_PORT: String(port) },
  stdio: ["ignore", "pipe", "inherit"],
});
let operatorLog = "";
operator.stdout?.on("data", (c: Buffer) => {
  operatorLog = (operatorLog + c).slice(-100_000);
});
let peakRssKb = 0;
const rssSampler = setInterval(() => {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${operator.pid}/status`, "utf8"));
    if (m) peakRssKb = Math.max(peakRssKb, Number(m[1]));
  } catch {}
}, 200);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
while (!operatorLog.includes("caches synced")) await sleep(50);

const modelManifest = (name: string) => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "InferenceModel",
  metadata: { name, namespace: ns },
  spec: { source: { url: `https://models.example/${name}.gguf` }, memory: "512Mi", replicas: 1 },
});
const readCore = async () => {
  try {
    const s = await core.readNamespacedSecret({ name: coreSecretName, namespace: system });
    const d = s.data?.[CONFIG_DATA_KEY];
    return d ? decodeCorePart(Buffer.from(d, "base64")) : undefined;
  } catch {
    return undefined;
  }
};
const listReplicas = async () =>
  (
    (await custom.listNamespacedCustomObject({
      group: "pomona.dev",
      version: "v1alpha1",
      namespace: ns,
      plural: "modelreplicas",
    })) as { items: ModelReplica[] }
  ).items;

// 1. apply → route.
const latencies: number[] = [];
for (let i = 0; i < 5; i++) {
  const name = `latency-${i}`;
  const started = performance.now();
  kubectl(["apply", "-f", "-"], JSON.stringify(modelManifest(name)));
  let marked = false;
  for (;;) {
    if (!marked) {
      const replica = (await listReplicas()).find((r) => r.spec.model === name);
      if (replica) {
        await custom.patchNamespacedCustomObjectStatus(
          {
            group: "pomona.dev",
            version: "v1alpha1",
            namespace: ns,
            plural: "modelreplicas",
            name: replica.metadata.name ?? "",
            body: {
              status: { phase: "Ready", endpoint: `http://10.0.0.1:8090/replicas/${ns}/${replica.metadata.name}` },
            },
          },
          setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
        );
        marked = true;
      }
    }
    const c = await readCore();
    if (c?.models.some((m) => m.name === name && m.endpoints.length > 0)) break;
    await sleep(20);
  }
  latencies.push(performance.now() - started);
}
console.log(
  `apply → route (includes kubectl start and the bench's own Ready patch): ${latencies.map((l) => l.toFixed(0)).join(", ")} ms`,
);

// 2. 1,000 models over 100 nodes.
const convergeStart = performance.now();
const list = {
  apiVersion: "v1",
  kind: "List",
  items: Array.from({ length: MODELS }, (_, i) => modelManifest(`model-${i}`)),
};
kubectl(["apply", "-f", "-"], JSON.stringify(list));
const applied = performance.now();
for (;;) {
  const replicas = await listReplicas();
  const models = (await custom.listNamespacedCustomObject({
    group: "pomona.dev",
    version: "v1alpha1",
    namespace: ns,
    plural: "inferencemodels",
  })) as {
    items: { status?: { replicas?: number; conditions?: { type: string; status: string }[] } }[];
  };
  const scheduled = models.items.filter(
    (m) => m.status?.replicas === 1 && m.status.conditions?.some((c) => c.type === "Scheduled" && c.status === "True"),
  ).length;
  if (replicas.length >= MODELS + 5 && scheduled === models.items.length) break;
  await sleep(500);
}
const converged = performance.now();
const perNode = new Map<string, number>();
for (const r of await listReplicas()) perNode.set(r.spec.nodeName, (perNode.get(r.spec.nodeName) ?? 0) + 1);
console.log(
  `1,000 models over ${NODES} nodes: kubectl apply ${((applied - convergeStart) / 1000).toFixed(1)} s, converged ${((converged - convergeStart) / 1000).toFixed(1)} s after apply started; replicas per node ${Math.min(...perNode.values())}–${Math.max(...perNode.values())}; operator peak RSS ${(peakRssKb / 1024).toFixed(0)} MiB`,
);

// 3. 100,000 keys: compile, validate, publish with the operator's code.
const keys: ApiKey[] = Array.from({ length: KEYS }, (_, i) => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "ApiKey",
  metadata: { name: `key-${i}`, namespace: `team-${i % 50}` },
  spec: { owner: `team-${i % 50}`, disabled: false },
  status: { hash: execHash(i) },
}));
function execHash(i: number): string {
  return createHash("sha256").update(`sk-pomona-${i}`).digest("hex");
}
const publisher = new GatewayConfigPublisher(KubernetesObjectApi.makeApiClient(kc), "bench-keys");
await core.createNamespace({ body: { metadata: { name: "bench-keys" } } });
const t0 = performance.now();
const compiled = compileGatewayConfig({ models: [], replicas: [], keys, policies: [], now: new Date() });
const t1 = performance.now();
const config = gatewayConfig.parse({ version: 1, generatedAt: new Date().toISOString(), ...compiled });
const t2 = performance.now();
const first = await publisher.publish(config);
const t3 = performance.now();
keys[0] = { ...keys[0]!, spec: { ...keys[0]!.spec, owner: "changed" } };
const again = gatewayConfig.parse({
  version: 2,
  generatedAt: new Date().toISOString(),
  ...compileGatewayConfig({ models: [], replicas: [], keys, policies: [], now: new Date() }),
});
const t4 = performance.now();
const second = await publisher.publish(again);
const t5 = performance.now();
console.log(
  `100,000 keys: compile ${(t1 - t0).toFixed(0)} ms, validate ${(t2 - t1).toFixed(0)} ms, first publish ${(t3 - t2).toFixed(0)} ms (${first.bucketsWritten} buckets, ${(first.bytes / 2 ** 20).toFixed(1)} MiB); one key changed: compile+validate ${(t4 - t3).toFixed(0)} ms, publish ${(t5 - t4).toFixed(0)} ms (${second.bucketsWritten} bucket)`,
);

clearInterval(renewal);
clearInterval(rssSampler);
operator.kill("SIGTERM");
await new Promise((r) => operator.once("exit", r));
await cp.stop();
rmSync(dir, { recursive: true, force: true });
