/**
 * Operator at scale, against a real local control plane:
 * 1. latency from `kubectl apply` of a model to its route in the gateway config
 *    (the bench plays the node-agent and marks the replica Ready as soon as it exists;
 *    bench/apply-to-first-token.ts measures the same with the real node-agent and gateway);
 * 2. convergence time and peak RSS of the operator for 1,000 InferenceModels over
 *    100 virtual nodes (every model Scheduled with its replica bound), CONVERGENCE_ROUNDS
 *    times, each with a freshly started operator (so its peak RSS is that round's) and
 *    after the previous round's models and replicas are gone;
 * 3. compile + validate + publish time of a gateway config with 100,000 keys
 *    (in this process, with the operator's own code, into the real API server),
 *    PUBLISH_ROUNDS times, each into a namespace of its own so every first publication
 *    writes all its buckets.
 * Run: node bench/operator-scale.ts
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
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
  encodeCorePart,
  gatewayConfig,
  inferenceNodeTaint,
  keyedHash,
  keyHashingDataKeys,
  keyHashingSecret,
  labels,
  type ModelReplica,
  modelMemoryResource,
  operatorNodeFlags,
} from "../crds/api/index.ts";
import { reuseConnections } from "../kube/connections.ts";
import { KubeRest } from "../kube/rest.ts";
import { compileGatewayConfig } from "../operator/gateway-config/compile.ts";
import { GatewayConfigCompiler } from "../operator/gateway-config/incremental.ts";
import { GatewayConfigPublisher } from "../operator/gateway-config/publish.ts";
import { cpuSeconds, rssBytes } from "./_child.ts";
import { BENCH_HASHING_KEY } from "./_gateway-config.ts";
import { measureRevocation } from "./_revocation.ts";
import { quickNote, size } from "./_size.ts";
import { median } from "./_stats.ts";
import { targetTable } from "./_targets.ts";

const root = join(import.meta.dirname, "..");
const NODES = size(100, 4);
const MODELS = size(1_000, 20);
const KEYS = size(100_000, 1_000);
const ns = "bench";
const system = "bench-system";
const APPLY_ROUNDS = size(5, 1);
const CONVERGENCE_ROUNDS = size(3, 1);
const PUBLISH_ROUNDS = size(3, 1);
const REVOCATION_ROUNDS = size(7, 2);
const REVOCATION_TARGET_MS = 500;
// The targets of issue 16, for the full size (a --quick run grades its tiny size against the same figures).
const CONVERGENCE_TARGET_S = 10;
const RSS_TARGET_MIB = 200;
const FIRST_PUBLISH_TARGET_MS = 1_000;

const dir = mkdtempSync(join(tmpdir(), "pomona-bench-"));
const cp = await startControlPlane({ dir });
const kc = new KubeConfig();
kc.loadFromFile(cp.kubeconfigPath);
// The publications below run the operator's code in this process: with its KubeConfig as operator/main.ts sets it up.
const operatorKc = new KubeConfig();
operatorKc.loadFromFile(cp.kubeconfigPath);
reuseConnections(operatorKc);
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

// The operator, as a child process; its RSS sampled from /proc while it runs.
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function startOperator() {
  const port = await freePort();
  const child = spawn(process.execPath, [...operatorNodeFlags, join(root, "operator/main.ts")], {
    env: {
      ...process.env,
      KUBECONFIG: cp.kubeconfigPath,
      POMONA_NAMESPACE: system,
      POMONA_OPERATOR_PORT: String(port),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let log = "";
  child.stdout?.on("data", (c: Buffer) => {
    log = (log + c).slice(-100_000);
  });
  let peakRss = 0;
  const rssSampler = setInterval(() => {
    peakRss = Math.max(peakRss, rssBytes(child.pid) ?? 0);
  }, 200);
  while (!log.includes("controllers started")) {
    if (child.exitCode !== null) throw new Error(`the operator exited with ${child.exitCode}:\n${log.slice(-3_000)}`);
    await sleep(50);
  }
  // What it holds before any work: its code and libraries, empty caches (each round starts with none).
  await sleep(2_000);
  const idleRssMiB = peakRss / 2 ** 20;
  return {
    idleRssMiB,
    peakRssMiB: () => peakRss / 2 ** 20,
    /** CPU seconds (user + system) the operator has used since it started: the price of any memory setting. */
    cpuSeconds: () => cpuSeconds(child.pid) ?? Number.NaN,
    stop: async () => {
      clearInterval(rssSampler);
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

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
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const benchStarted = performance.now();
const progress = (what: string) =>
  console.error(`operator-scale: ${what} at ${seconds(performance.now() - benchStarted)}`);
/**
 * Clears the namespace between rounds, the operator stopped so it recreates nothing: one DeleteCollection
 * call per kind (kubectl deletes one object per request), replicas too rather than waiting about a minute
 * for the garbage collector to follow the owner references of a thousand of them.
 */
const deleteAllModels = async () => {
  for (const plural of ["inferencemodels", "modelreplicas"])
    await custom.deleteCollectionNamespacedCustomObject({
      group: "pomona.dev",
      version: "v1alpha1",
      namespace: ns,
      plural,
    });
  while ((await listReplicas()).length > 0) await sleep(200);
};

// 1. apply → route.
let operator = await startOperator();
const latencies: number[] = [];
for (let i = 0; i < APPLY_ROUNDS; i++) {
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
await operator.stop();
await deleteAllModels();
progress("apply → route done");

// 2. 1,000 models over 100 nodes, each round with a fresh operator and nothing left from the last.
const convergence = {
  apply: [] as number[],
  converged: [] as number[],
  afterApply: [] as number[],
  rssMiB: [] as number[],
  idleRssMiB: [] as number[],
  cpuS: [] as number[],
  spread: "",
};
for (let round = 0; round < CONVERGENCE_ROUNDS; round++) {
  operator = await startOperator();
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
      (m) =>
        m.status?.replicas === 1 && m.status.conditions?.some((c) => c.type === "Scheduled" && c.status === "True"),
    ).length;
    if (replicas.length >= MODELS && scheduled === models.items.length) break;
    await sleep(500);
  }
  const converged = performance.now();
  convergence.apply.push(applied - convergeStart);
  convergence.converged.push(converged - convergeStart);
  convergence.afterApply.push(converged - applied);
  convergence.rssMiB.push(operator.peakRssMiB());
  convergence.cpuS.push(operator.cpuSeconds());
  convergence.idleRssMiB.push(operator.idleRssMiB);
  const perNode = new Map<string, number>();
  for (const r of await listReplicas()) perNode.set(r.spec.nodeName, (perNode.get(r.spec.nodeName) ?? 0) + 1);
  convergence.spread = `${Math.min(...perNode.values())}–${Math.max(...perNode.values())}`;
  // Owner references take the replicas with their models (kube-controller-manager's garbage collector).
  progress(`round ${round + 1} of ${MODELS} models converged`);
  await operator.stop();
  if (round < CONVERGENCE_ROUNDS - 1) await deleteAllModels();
}

// 3. 100,000 keys: compile, validate, publish with the operator's code.
const keys: ApiKey[] = Array.from({ length: KEYS }, (_, i) => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "ApiKey",
  metadata: { name: `key-${i}`, namespace: `team-${i % 50}` },
  spec: { owner: `team-${i % 50}`, disabled: false },
  status: { hash: keyedHash(`sk-pomona-${i}`, BENCH_HASHING_KEY), hashKeyId: BENCH_HASHING_KEY.id },
}));
const publication = {
  compile: [] as number[],
  validate: [] as number[],
  first: [] as number[],
  changedCompile: [] as number[],
  changedPublish: [] as number[],
  buckets: 0,
  mib: 0,
  changedBuckets: 0,
};
for (let round = 0; round < PUBLISH_ROUNDS; round++) {
  const namespace = `bench-keys-${round}`;
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  // As the operator would have: the key the hashes above are made with.
  await core.createNamespacedSecret({
    namespace,
    body: {
      metadata: { name: keyHashingSecret, namespace },
      data: { [keyHashingDataKeys.current]: BENCH_HASHING_KEY.bytes.toString("base64") },
    },
  });
  const publisher = new GatewayConfigPublisher(new KubeRest(operatorKc), namespace);
  const roundKeys = [...keys];
  const t0 = performance.now();
  const compiled = compileGatewayConfig({ models: [], replicas: [], keys: roundKeys, policies: [], now: new Date() });
  const t1 = performance.now();
  const config = gatewayConfig.parse({ version: 1, generatedAt: new Date().toISOString(), ...compiled });
  const t2 = performance.now();
  const first = await publisher.publish(config);
  const t3 = performance.now();
  // One key changed, as the operator handles it now: the incremental compiler (primed by the state before
  // the change, as a running operator is) re-encodes one bucket, and only that bucket and the core are written.
  const compiler = new GatewayConfigCompiler();
  compiler.compile({ models: [], replicas: [], keys: roundKeys, policies: [], now: new Date() });
  roundKeys[0] = { ...roundKeys[0]!, spec: { ...roundKeys[0]!.spec, owner: `changed-${round}` } };
  const t3b = performance.now();
  const parts = compiler.compile({ models: [], replicas: [], keys: roundKeys, policies: [], now: new Date() });
  const t4 = performance.now();
  const second = await publisher.publishEncoded(
    {
      core: encodeCorePart({ version: 2, generatedAt: new Date().toISOString(), ...parts.core }),
      buckets: [...parts.buckets],
    },
    2,
  );
  const t5 = performance.now();
  publication.compile.push(t1 - t0);
  publication.validate.push(t2 - t1);
  publication.first.push(t3 - t2);
  publication.changedCompile.push(t4 - t3b);
  publication.changedPublish.push(t5 - t4);
  publication.buckets = first.bucketsWritten;
  publication.mib = first.bytes / 2 ** 20;
  publication.changedBuckets = second.bucketsWritten;
}

progress("publication done");

// 3b. One key deleted at 100,000 keys: the operator's incremental compile and one-bucket publish, then a gateway
// process (gateway/main.ts, as deployed) applying the delta, until it refuses the key. The informer event that
// starts it is not included (4 measures the whole way with kubectl, at a few keys).
const atScale: number[] = [];
{
  const namespace = "bench-keys-revoke";
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  // As the operator would have: the key the hashes above are made with.
  await core.createNamespacedSecret({
    namespace,
    body: {
      metadata: { name: keyHashingSecret, namespace },
      data: { [keyHashingDataKeys.current]: BENCH_HASHING_KEY.bytes.toString("base64") },
    },
  });
  const publisher = new GatewayConfigPublisher(new KubeRest(operatorKc), namespace);
  const compiler = new GatewayConfigCompiler();
  let live = [...keys];
  let version = 0;
  const publishLive = async () => {
    const now = new Date();
    const parts = compiler.compile({ models: [], replicas: [], keys: live, policies: [], now });
    version = Math.max(version + 1, now.getTime());
    const coreBytes = encodeCorePart({ version, generatedAt: now.toISOString(), ...parts.core });
    await publisher.publishEncoded({ core: coreBytes, buckets: [...parts.buckets] }, version);
  };
  await publishLive();
  const port = await freePort();
  const gateway = spawn(process.execPath, [join(root, "gateway/main.ts")], {
    env: {
      ...process.env,
      KUBECONFIG: cp.kubeconfigPath,
      POMONA_NAMESPACE: namespace,
      POMONA_GATEWAY_PORT: String(port),
      POMONA_GATEWAY_HOST: "127.0.0.1",
      POMONA_GATEWAY_ADMIN_PORT: String(await freePort()),
      POMONA_NODE_TOKEN: "bench-node-token",
      POMONA_LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const status = async (i: number) =>
    (
      await fetch(`http://127.0.0.1:${port}/v1/models`, {
        headers: { authorization: `Bearer sk-pomona-${i}` },
      }).catch(() => undefined)
    )?.status;
  while ((await status(0)) !== 200) await sleep(100);
  for (let round = 0; round < REVOCATION_ROUNDS; round++) {
    const victim = Math.floor(KEYS / 100) + round * 13;
    await sleep(500);
    const started = performance.now();
    live = live.filter((k) => k.metadata.name !== `key-${victim}`);
    await publishLive();
    while ((await status(victim)) !== 401) await sleep(5);
    atScale.push(performance.now() - started);
  }
  const exited = new Promise((r) => gateway.once("exit", r));
  gateway.kill("SIGTERM");
  await exited;
}
progress("revocation at scale done");

// 4. `kubectl delete apikey` → refused, end to end, with the operator and a gateway as processes.
const revocation = await measureRevocation(cp.kubeconfigPath, cp.binaries.kubectl, REVOCATION_ROUNDS);
progress("revocation done");
const ms = (values: number[]) => `${median(values).toFixed(0)} ms`;
const firstPublished = publication.compile.map(
  (c, i) => c + (publication.validate[i] ?? 0) + (publication.first[i] ?? 0),
);
console.log(`${quickNote()}### Operator at scale (local kube-apiserver and etcd; ${NODES} virtual nodes)

| what | median | runs |
|---|---|---|
| \`kubectl apply\` of a model → its route in the published config (the bench marks the replica Ready as soon as it appears; kubectl's start included) | ${ms(latencies)} | ${latencies.map((l) => l.toFixed(0)).join(", ")} ms |
| ${MODELS.toLocaleString("en")} InferenceModels: \`kubectl apply\` of the list | ${seconds(median(convergence.apply))} | ${convergence.apply.map(seconds).join(", ")} |
| … until every model is Scheduled with its replica bound (from the start of the apply) | ${seconds(median(convergence.converged))} | ${convergence.converged.map(seconds).join(", ")} |
| … the same, from the moment \`kubectl apply\` returned | ${seconds(median(convergence.afterApply))} | ${convergence.afterApply.map(seconds).join(", ")} |
| operator peak RSS during that | ${median(convergence.rssMiB).toFixed(0)} MiB | ${convergence.rssMiB.map((r) => r.toFixed(0)).join(", ")} MiB |
| … of which before any model: the operator idle with empty caches, 2 s after they synced | ${median(convergence.idleRssMiB).toFixed(0)} MiB | ${convergence.idleRssMiB.map((r) => r.toFixed(0)).join(", ")} MiB |
| operator CPU time from its start until every model converged (user + system) | ${seconds(median(convergence.cpuS) * 1000)} | ${convergence.cpuS.map((c) => seconds(c * 1000)).join(", ")} |
| replicas per node (last round) | ${convergence.spread} | |
| ${KEYS.toLocaleString("en")} keys: compile | ${ms(publication.compile)} | ${publication.compile.map((v) => v.toFixed(0)).join(", ")} ms |
| … zod validation | ${ms(publication.validate)} | ${publication.validate.map((v) => v.toFixed(0)).join(", ")} ms |
| … first publication (${publication.buckets} buckets, ${publication.mib.toFixed(1)} MiB gzipped) | ${ms(publication.first)} | ${publication.first.map((v) => v.toFixed(0)).join(", ")} ms |
| one key changed: compile + validate (incremental, as the operator does) | ${ms(publication.changedCompile)} | ${publication.changedCompile.map((v) => v.toFixed(0)).join(", ")} ms |
| … publish (${publication.changedBuckets} bucket and the core) | ${ms(publication.changedPublish)} | ${publication.changedPublish.map((v) => v.toFixed(0)).join(", ")} ms |
| one key deleted at ${KEYS.toLocaleString("en")} keys: incremental compile → one-bucket publish → a gateway process refuses it | ${ms(atScale)} | ${atScale.map((v) => v.toFixed(0)).join(", ")} ms |
| \`kubectl delete apikey\` → the key refused by a gateway process (operator process, default debounce; kubectl's start included; ${revocation.keys} keys) | ${ms(revocation.rounds)} | ${revocation.rounds.map((v) => v.toFixed(0)).join(", ")} ms |

The design scale is ${MODELS.toLocaleString("en")} models and ${KEYS.toLocaleString("en")} keys (docs/operator.md). The end-to-end revocation runs with few keys (minting ${KEYS.toLocaleString("en")} keys through the operator would take the bench far longer than the rest); the row above it measures, at ${KEYS.toLocaleString("en")} keys, everything after the operator's informer sees the deletion.

${targetTable([
  {
    target: `${MODELS.toLocaleString("en")} models over ${NODES} nodes all Scheduled and bound ≤ ${CONVERGENCE_TARGET_S} s after \`kubectl apply\` returns (median)`,
    measured: seconds(median(convergence.afterApply)),
    met: median(convergence.afterApply) <= CONVERGENCE_TARGET_S * 1000,
  },
  {
    target: `operator peak RSS during that ≤ ${RSS_TARGET_MIB} MiB (median)`,
    measured: `${median(convergence.rssMiB).toFixed(0)} MiB`,
    met: median(convergence.rssMiB) <= RSS_TARGET_MIB,
  },
  {
    target: `${KEYS.toLocaleString("en")} keys first published (compile + validate + publish) ≤ ${FIRST_PUBLISH_TARGET_MS} ms (median)`,
    measured: ms(firstPublished),
    met: median(firstPublished) <= FIRST_PUBLISH_TARGET_MS,
  },
  {
    target: `\`kubectl delete apikey\` → refused, end to end, median ≤ ${REVOCATION_TARGET_MS} ms`,
    measured: ms(revocation.rounds),
    met: median(revocation.rounds) <= REVOCATION_TARGET_MS,
  },
])}`);

clearInterval(renewal);
await cp.stop();
rmSync(dir, { recursive: true, force: true });
