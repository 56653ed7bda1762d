/**
 * `pomona up` (`npm start`): a whole Pomona on this machine — the cluster, the
 * CRDs, the operator, a node-agent in virtual mode and the gateway, each its own
 * process — then the quickstart objects, and the endpoint and key to call.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { KubernetesObject } from "@kubernetes/client-node";
import { type InferenceModel, type ModelReplica, type ModelSource, nodeTokenSecret } from "../crds/api/index.ts";
import { resolveCluster } from "./cluster.ts";
import { apply, connect, isNotFound, type Kube, parseManifests } from "./kube.ts";
import { bar, step } from "./progress.ts";
import { Supervisor } from "./supervisor.ts";

const repoRoot = join(import.meta.dirname, "..");
const sharedModel = resolve(repoRoot, "..", "shared", "models", "stories260K.gguf");

export interface UpOptions {
  kubeconfig?: string;
  stateDir: string;
  /** Source of the quickstart model: hf:…, https://… or a file path. */
  model?: string;
  namespace: string;
  systemNamespace: string;
  gatewayPort: number;
  agentPort: number;
  operatorPort: number;
}

/**
 * The quickstart model's source: what the user asked for; else the same tiny
 * model from this checkout's shared/ folder when present, so it works offline;
 * else the quickstart's own hf: reference.
 */
export function quickstartSource(model: string | undefined, fromFile: ModelSource): ModelSource {
  if (model?.startsWith("hf:")) return { hf: model };
  if (model?.startsWith("https://")) return { url: model };
  if (model) return { path: resolve(model) };
  if (existsSync(sharedModel)) return { path: sharedModel, ...(fromFile.sha256 ? { sha256: fromFile.sha256 } : {}) };
  return fromFile;
}

/** A DNS-1123 name for this machine's Node. */
export const localNodeName = () =>
  hostname()
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 63) || "pomona-node";

async function ensureNamespace(kube: Kube, name: string) {
  await apply(kube, { apiVersion: "v1", kind: "Namespace", metadata: { name } });
}

/** The node token is made once and kept in the cluster; the gateway and the node-agent read the same value. */
async function ensureNodeToken(kube: Kube, namespace: string): Promise<string> {
  try {
    const secret = await kube.core.readNamespacedSecret({ name: nodeTokenSecret, namespace });
    const token = secret.data?.token;
    if (token) return Buffer.from(token, "base64").toString("utf8");
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  const token = randomBytes(32).toString("base64url");
  await kube.core.createNamespacedSecret({
    namespace,
    body: { metadata: { name: nodeTokenSecret, namespace }, stringData: { token } },
  });
  return token;
}

async function installCrds(kube: Kube) {
  const dir = join(repoRoot, "crds");
  const crds = readdirSync(dir)
    .filter((f) => f.endsWith(".yaml"))
    .flatMap((f) => parseManifests(readFileSync(join(dir, f), "utf8")));
  for (const crd of crds) await apply(kube, crd);
  for (const crd of crds) {
    for (;;) {
      const served = (await kube.objects.read(crd as KubernetesObject & { metadata: { name: string } })) as {
        status?: { conditions?: { type: string; status: string }[] };
      };
      if (served.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) break;
      await sleep(200);
    }
  }
}

function quickstartObjects(options: UpOptions): KubernetesObject[] {
  const objects = parseManifests(readFileSync(join(repoRoot, "examples", "quickstart.yaml"), "utf8"));
  for (const o of objects) {
    o.metadata = { ...o.metadata, namespace: options.namespace };
    if (o.kind === "InferenceModel") {
      const { spec } = o as unknown as InferenceModel;
      spec.source = quickstartSource(options.model, spec.source);
    }
  }
  return objects;
}

async function waitForModel(kube: Kube, namespace: string, name: string): Promise<void> {
  let lastPhase = "";
  for (;;) {
    const replicas = (await kube.custom.listNamespacedCustomObject({
      group: "pomona.dev",
      version: "v1alpha1",
      namespace,
      plural: "modelreplicas",
      labelSelector: `pomona.dev/model=${name}`,
    })) as { items: ModelReplica[] };
    const replica = replicas.items[0];
    const phase = replica?.status?.phase ?? "Pending";
    if (phase !== lastPhase) {
      step(`model ${name}: ${phase}${replica?.status?.message ? ` — ${replica.status.message}` : ""}`);
      lastPhase = phase;
    }
    if (phase === "Downloading" && replica?.status?.progress) {
      bar("downloading", replica.status.progress.bytesDone, replica.status.progress.bytesTotal);
    }
    const model = (await kube.custom.getNamespacedCustomObject({
      group: "pomona.dev",
      version: "v1alpha1",
      namespace,
      plural: "inferencemodels",
      name,
    })) as InferenceModel;
    if ((model.status?.readyReplicas ?? 0) > 0) return;
    if (phase === "Failed")
      throw new Error(`model ${name} failed: ${replica?.status?.message ?? "see the node-agent log"}`);
    await sleep(500);
  }
}

async function waitForKey(kube: Kube, namespace: string, name: string): Promise<string> {
  for (;;) {
    try {
      const secret = await kube.core.readNamespacedSecret({ name, namespace });
      const key = secret.data?.key;
      if (key) return Buffer.from(key, "base64").toString("utf8");
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    await sleep(300);
  }
}

/** Ready when the gateway routes the model for this key: its config has caught up with the cluster. */
async function waitForRoute(baseUrl: string, key: string, model: string): Promise<void> {
  for (;;) {
    const res = await fetch(`${baseUrl}/v1/models`, { headers: { authorization: `Bearer ${key}` } }).catch(
      () => undefined,
    );
    if (res?.ok) {
      const body = (await res.json()) as { data: { id: string }[] };
      if (body.data.some((m) => m.id === model)) return;
    }
    await sleep(300);
  }
}

export async function up(options: UpOptions): Promise<void> {
  const started = Date.now();
  const cluster = await resolveCluster({ kubeconfig: options.kubeconfig, stateDir: options.stateDir, log: step });
  step(
    cluster.local ? `control plane up (kube-apiserver ${cluster.local.version})` : `using ${cluster.kubeconfigPath}`,
  );
  const kube = connect(cluster.kubeconfigPath);

  const supervisor = new Supervisor(join(options.stateDir, "logs"), (component, code) => {
    step(`${component.name} exited with code ${code}; its log: ${component.logFile}`);
  });
  let stopping = false;
  const shutdown = async () => {
    if (stopping) return;
    stopping = true;
    step("stopping…");
    await supervisor.stopAll();
    await cluster.local?.stop();
    process.exit(0);
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);

  await installCrds(kube);
  await ensureNamespace(kube, options.systemNamespace);
  await ensureNamespace(kube, options.namespace);
  const nodeToken = await ensureNodeToken(kube, options.systemNamespace);
  step("CRDs installed");

  const common = {
    KUBECONFIG: cluster.kubeconfigPath,
    POMONA_NAMESPACE: options.systemNamespace,
    POMONA_NODE_TOKEN: nodeToken,
  };
  supervisor.start({
    name: "operator",
    main: "operator/main.ts",
    env: { ...common, POMONA_OPERATOR_PORT: String(options.operatorPort) },
  });
  supervisor.start({
    name: "node-agent",
    main: "node-agent/main.ts",
    env: {
      ...common,
      POMONA_NODE_NAME: localNodeName(),
      POMONA_NODE_MODE: "virtual",
      POMONA_AGENT_PORT: String(options.agentPort),
      POMONA_CACHE_DIR: join(options.stateDir, "models"),
    },
  });
  supervisor.start({
    name: "gateway",
    main: "gateway/main.ts",
    env: { ...common, POMONA_GATEWAY_PORT: String(options.gatewayPort), POMONA_GATEWAY_HOST: "127.0.0.1" },
  });
  step(`operator, node-agent and gateway started; logs in ${join(options.stateDir, "logs")}`);

  const objects = quickstartObjects(options);
  for (const o of objects) await apply(kube, o);
  const model = objects.find((o) => o.kind === "InferenceModel")?.metadata?.name ?? "stories";
  const keyName = objects.find((o) => o.kind === "ApiKey")?.metadata?.name ?? "quickstart";
  step(`applied examples/quickstart.yaml in namespace ${options.namespace}`);

  await waitForModel(kube, options.namespace, model);
  const key = await waitForKey(kube, options.namespace, keyName);
  const baseUrl = `http://127.0.0.1:${options.gatewayPort}`;
  await waitForRoute(baseUrl, key, model);
  step(`model ${model} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  process.stdout.write(
    [
      "",
      `Pomona is serving an OpenAI-compatible API at ${baseUrl}/v1`,
      `API key (also in Secret ${options.namespace}/${keyName}): ${key}`,
      "",
      "Try it:",
      `  curl ${baseUrl}/v1/chat/completions -H "Authorization: Bearer ${key}" -H "Content-Type: application/json" -d '{"model":"${model}","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":64}'`,
      "",
      `kubectl: export KUBECONFIG=${cluster.kubeconfigPath}`,
      "Press Ctrl-C to stop.",
      "",
    ].join("\n"),
  );
}
