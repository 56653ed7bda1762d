/**
 * Control plane end to end: time from `kubectl apply` of an InferenceModel to its first token streamed
 * through the gateway, with every part real — a local kube-apiserver and etcd, the operator, a node-agent
 * (virtual node) loading the model from a path on the node, and the gateway watching the config the
 * operator publishes — and a key the operator minted, read from its Secret.
 *
 * The clock starts before kubectl is spawned (its start-up counts: it is what a user waits for) and stops
 * at the first SSE event carrying text. Until the route exists the gateway answers 404 or 503, so the
 * bench asks again every POLL_MS; that bounds the error of each figure by POLL_MS. Each run applies a new
 * model name, then deletes it and waits for its replica to go, so runs do not help each other beyond the
 * model file in the page cache.
 *
 * The operator's scale figures (1,000 models, 100,000 keys) are in bench/operator-scale.ts.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort, startControlPlane } from "../controlplane/local-control-plane.ts";
import { BENCH_ENGINE, BENCH_MODEL, BENCH_PROMPT, BENCH_THREADS } from "./_bench-model.ts";
import { type Component, startComponent } from "./_child.ts";
import { quickNote, size } from "./_size.ts";
import { median } from "./_stats.ts";

const RUNS = size(5, 1);
const POLL_MS = 20;
const RUN_TIMEOUT_MS = 120_000;
const NS = "bench";
const SYSTEM_NS = "bench-system";
const NODE_TOKEN = "bench-node-token";
const root = join(import.meta.dirname, "..");

const dir = mkdtempSync(join(tmpdir(), "pomona-bench-first-token-"));
const cp = await startControlPlane({ dir });
const kubectl = (args: string[], input?: string) =>
  new Promise<string>((resolve, reject) => {
    const child = execFile(
      cp.binaries.kubectl,
      args,
      { env: { ...process.env, KUBECONFIG: cp.kubeconfigPath } },
      (error, stdout, stderr) => (error ? reject(new Error(`kubectl ${args.join(" ")}: ${stderr}`)) : resolve(stdout)),
    );
    child.stdin?.end(input ?? "");
  });

const components: Component[] = [];
const cacheDir = mkdtempSync(join(tmpdir(), "pomona-bench-cache-"));
try {
  await kubectl(["apply", "--server-side", "-f", join(root, "crds")]);
  await kubectl(["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]);
  await kubectl(["create", "namespace", NS]);
  await kubectl(["create", "namespace", SYSTEM_NS]);
  const kube = { KUBECONFIG: cp.kubeconfigPath, POMONA_LOG_LEVEL: "info" };
  components.push(
    await startComponent(
      "operator/main.ts",
      { ...kube, POMONA_NAMESPACE: SYSTEM_NS, POMONA_OPERATOR_PORT: String(await freePort()) },
      /controllers started/,
    ),
  );
  components.push(
    await startComponent(
      "node-agent/main.ts",
      {
        ...kube,
        POMONA_NODE_NAME: "bench-node",
        POMONA_NODE_MODE: "virtual",
        POMONA_AGENT_ADDRESS: "127.0.0.1",
        POMONA_AGENT_PORT: String(await freePort()),
        POMONA_NODE_TOKEN: NODE_TOKEN,
        POMONA_CACHE_DIR: cacheDir,
        POMONA_MODEL_MEMORY: "2Gi",
        POMONA_THREADS: String(BENCH_THREADS),
      },
      /node-agent ready/,
    ),
  );
  const gatewayPort = await freePort();
  components.push(
    await startComponent(
      "gateway/main.ts",
      {
        ...kube,
        POMONA_NAMESPACE: SYSTEM_NS,
        POMONA_GATEWAY_PORT: String(gatewayPort),
        POMONA_GATEWAY_HOST: "127.0.0.1",
        POMONA_GATEWAY_ADMIN_PORT: String(await freePort()),
        POMONA_GATEWAY_ADMIN_HOST: "127.0.0.1",
        POMONA_NODE_TOKEN: NODE_TOKEN,
      },
      /gateway listening/,
    ),
  );
  const gateway = `http://127.0.0.1:${gatewayPort}`;

  // A key as a user gets one: apply an ApiKey, read the key the operator minted into its Secret.
  await kubectl(
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: "pomona.dev/v1alpha1",
      kind: "ApiKey",
      metadata: { name: "bench", namespace: NS },
      spec: { owner: "bench" },
    }),
  );
  let apiKey = "";
  for (const deadline = Date.now() + 60_000; !apiKey && Date.now() < deadline; await sleep(100)) {
    apiKey = await kubectl(["get", "secret", "bench", "-n", NS, "-o", "jsonpath={.data.key}"]).then(
      (b64) => Buffer.from(b64, "base64").toString("utf8"),
      () => "",
    );
  }
  if (!apiKey) throw new Error("the operator did not mint the ApiKey's Secret within 60 s");

  /** Asks for a stream until one yields text; resolves at that first text. */
  const firstToken = async (model: string): Promise<void> => {
    const deadline = Date.now() + RUN_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const response = await fetch(`${gateway}/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ model, prompt: BENCH_PROMPT, max_tokens: 8, stream: true }),
      }).catch(() => undefined);
      if (response?.status === 200 && response.body) {
        const decoder = new TextDecoder();
        let text = "";
        for await (const bytes of response.body) {
          text += decoder.decode(bytes as Uint8Array, { stream: true });
          if (/"text":"[^"]/.test(text)) {
            await response.body.cancel().catch(() => {});
            return;
          }
        }
      } else {
        await response?.body?.cancel().catch(() => {});
      }
      await sleep(POLL_MS);
    }
    throw new Error(`no token from ${model} within ${RUN_TIMEOUT_MS} ms`);
  };

  const figures: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const name = `first-token-${run}`;
    const manifest = {
      apiVersion: "pomona.dev/v1alpha1",
      kind: "InferenceModel",
      metadata: { name, namespace: NS },
      spec: {
        source: { path: BENCH_MODEL },
        engine: { contextSize: BENCH_ENGINE.contextSize, parallelSequences: BENCH_ENGINE.parallelSequences },
        replicas: 1,
        memory: "64Mi",
      },
    };
    const started = performance.now();
    await kubectl(["apply", "-f", "-"], JSON.stringify(manifest));
    await firstToken(name);
    figures.push((performance.now() - started) / 1000);
    await kubectl(["delete", "inferencemodel", name, "-n", NS, "--wait=true"]);
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(200)) {
      const left = await kubectl(["get", "modelreplicas", "-n", NS, "-l", `pomona.dev/model=${name}`, "-o", "name"]);
      if (!left.trim()) break;
    }
  }
  const m = median(figures);
  console.log(`### From \`kubectl apply\` to the first token through the gateway (median of ${RUNS})
${quickNote()}
Local kube-apiserver and etcd, the operator, one node-agent (virtual node, ${BENCH_THREADS} thread(s)) and the gateway, each its own process; ${BENCH_MODEL.split("/").pop()} from a path on the node, context ${BENCH_ENGINE.contextSize} over ${BENCH_ENGINE.parallelSequences} sequences; a key minted by the operator. Includes kubectl's start, scheduling, the model load and warm-up, the config publication and the gateway's swap; the gateway is asked every ${POLL_MS} ms.

| runs (s) | median (s) |
|---|---|
| ${figures.map((f) => f.toFixed(2)).join(", ")} | ${m.toFixed(2)} |

The issue sets no target for this figure.`);
} catch (err) {
  for (const [i, c] of components.entries())
    console.error(`--- component ${i} output ---\n${c.output().slice(-3_000)}`);
  throw err;
} finally {
  for (const c of components.reverse()) await c.stop();
  await cp.stop();
  rmSync(dir, { recursive: true, force: true });
  rmSync(cacheDir, { recursive: true, force: true });
}
