/**
 * `pomona up` (`npm start`): a whole Pomona on this machine — the cluster, the
 * CRDs, the operator, a node-agent in virtual mode and the gateway, each its own
 * process — then the quickstart objects, and the endpoint and key to call.
 */
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { KubernetesObject } from "@kubernetes/client-node";
import { type InferenceModel, type ModelReplica, type ModelSource, nodeTokenSecret } from "../crds/api/index.ts";
import { recordGatewayUrl, resolveCluster } from "./cluster.ts";
import { apply, connect, isNotFound, isTransient, type Kube, parseManifests } from "./kube.ts";
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

/** The quickstart model's source: what the user asked for, else the quickstart's own hf: reference. */
export function quickstartSource(model: string | undefined, fromFile: ModelSource): ModelSource {
  if (model?.startsWith("hf:")) return { hf: model };
  if (model?.startsWith("https://")) return { url: model };
  if (model) return { path: resolve(model) };
  return fromFile;
}

/**
 * Offline start: when this checkout's shared/ folder holds the very file the
 * source names (same sha256), it goes into the node-agent's content-addressed
 * cache, so the hf: download is already done and the object stays exactly as
 * examples/quickstart.yaml says (a later `kubectl apply -f examples/` changes nothing).
 */
function seedCache(cacheDir: string, source: ModelSource): boolean {
  if (!source.sha256 || !existsSync(sharedModel)) return false;
  const cached = join(cacheDir, `${source.sha256}.gguf`);
  if (existsSync(cached)) return true;
  if (createHash("sha256").update(readFileSync(sharedModel)).digest("hex") !== source.sha256) return false;
  mkdirSync(cacheDir, { recursive: true });
  copyFileSync(sharedModel, cached);
  return true;
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

/** Polls `probe` until it returns a value; answers the API server gives while it warms up (429, 5xx) are waited out. */
async function poll<T>(probe: () => Promise<T | undefined>, intervalMs = 300): Promise<T> {
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      if (!isTransient(error)) throw error;
    }
    await sleep(intervalMs);
  }
}

/**
 * Until a replica of the model is Ready. One on this machine's node counts only once it turned Ready
 * after `since` (when this run started its node-agent): after a restart, its status still says Ready
 * from the last run while the new node-agent loads the model again.
 */
function waitForModel(kube: Kube, namespace: string, name: string, localNode: string, since: number): Promise<true> {
  const ref = { group: "pomona.dev", version: "v1alpha1", namespace };
  // The API server keeps whole seconds.
  const sinceSecond = Math.floor(since / 1000) * 1000;
  const readyNow = (r: ModelReplica) => {
    if (r.status?.phase !== "Ready") return false;
    if (r.spec.nodeName !== localNode) return true;
    const condition = r.status.conditions?.find((c) => c.type === "Ready");
    return Date.parse(condition?.lastTransitionTime ?? "") >= sinceSecond;
  };
  let lastPhase = "";
  return poll(async () => {
    const replicas = (await kube.custom.listNamespacedCustomObject({
      ...ref,
      plural: "modelreplicas",
      labelSelector: `pomona.dev/model=${name}`,
    })) as { items: ModelReplica[] };
    if (replicas.items.some(readyNow)) return true;
    const replica = replicas.items[0];
    const phase = replica?.status?.phase === "Ready" ? "Pending" : (replica?.status?.phase ?? "Pending");
    if (phase !== lastPhase) {
      step(`model ${name}: ${phase}${replica?.status?.message ? ` — ${replica.status.message}` : ""}`);
      lastPhase = phase;
    }
    if (phase === "Downloading" && replica?.status?.progress) {
      bar("downloading", replica.status.progress.bytesDone, replica.status.progress.bytesTotal);
    }
    if (phase === "Failed")
      throw new Error(`model ${name} failed: ${replica?.status?.message ?? "see the node-agent log"}`);
    return undefined;
  }, 500);
}

function waitForKey(kube: Kube, namespace: string, name: string): Promise<string> {
  return poll(async () => {
    try {
      const secret = await kube.core.readNamespacedSecret({ name, namespace });
      // Only a key the operator minted for this ApiKey is printed, never another Secret of the same name.
      const minted = secret.metadata?.ownerReferences?.some((o) => o.kind === "ApiKey" && o.name === name);
      const key = minted ? secret.data?.key : undefined;
      return key ? Buffer.from(key, "base64").toString("utf8") : undefined;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  });
}

/**
 * Until the model answers through the gateway with this key (a one-token chat, the request the user is
 * about to make), so the curl line printed next works: the gateway's config follows the replica's
 * readiness a moment later.
 */
function waitForAnswer(baseUrl: string, key: string, model: string): Promise<true> {
  return poll(async () => {
    const res = await fetch(`${baseUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model, messages: [{ role: "user", content: "Hi" }], max_tokens: 1 }),
    }).catch(() => undefined);
    if (res && (res.status === 400 || res.status === 403)) {
      // The key or the request itself is refused: waiting would not help.
      const body = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
      throw new Error(`the gateway refused a first request: ${body.error?.message ?? res.status}`);
    }
    await res?.body?.cancel();
    return res?.ok ? true : undefined;
  }, 500);
}

const lastLines = (file: string, n = 15) => readFileSync(file, "utf8").trimEnd().split("\n").slice(-n).join("\n");

export async function up(options: UpOptions): Promise<void> {
  const started = Date.now();
  const cluster = await resolveCluster({ kubeconfig: options.kubeconfig, stateDir: options.stateDir, log: step });
  step(
    cluster.local ? `control plane up (kube-apiserver ${cluster.local.version})` : `using ${cluster.kubeconfigPath}`,
  );

  // Until the model is served, a component that exits ends `pomona up` with its log; afterwards it is reported.
  let serving = false;
  let componentExited: (error: Error) => void = () => {};
  const exited = new Promise<never>((_, reject) => {
    componentExited = reject;
  });
  const supervisor = new Supervisor(join(options.stateDir, "logs"), (component, code) => {
    const message = `${component.name} exited with code ${code}; its log: ${component.logFile}`;
    if (serving) step(`${message}; starting it again`);
    else componentExited(new Error(`${message}\n${lastLines(component.logFile)}`));
  });
  const stopAll = async () => {
    await supervisor.stopAll();
    await cluster.local?.stop();
  };
  let stopping = false;
  const onSignal = async () => {
    if (stopping) return;
    stopping = true;
    step("stopping…");
    await stopAll();
    process.exit(0);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  try {
    const { baseUrl, model, keyName, key } = await Promise.race([
      startComponents(options, cluster.kubeconfigPath, supervisor),
      exited,
    ]);
    serving = true;
    supervisor.restartOnExit = true;
    step(`model ${model} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    process.stdout.write(
      [
        "",
        `Pomona is serving an OpenAI-compatible API at ${baseUrl}/v1`,
        `API key (also in Secret ${options.namespace}/${keyName}): ${key}`,
        "",
        "Try it:",
        `  curl -s ${baseUrl}/v1/chat/completions -H "Authorization: Bearer ${key}" -H "Content-Type: application/json" -d '{"model":"${model}","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":64}'`,
        "",
        `kubectl: export KUBECONFIG=${cluster.kubeconfigPath}`,
        "Press Ctrl-C to stop.",
        "",
      ].join("\n"),
    );
  } catch (error) {
    stopping = true;
    step("stopping after an error…");
    await stopAll();
    throw error;
  }
}

/** CRDs, namespaces and the node token; then the three components; then the quickstart, until it is served. */
async function startComponents(options: UpOptions, kubeconfigPath: string, supervisor: Supervisor) {
  const kube = connect(kubeconfigPath);
  await installCrds(kube);
  await ensureNamespace(kube, options.systemNamespace);
  await ensureNamespace(kube, options.namespace);
  const nodeToken = await ensureNodeToken(kube, options.systemNamespace);
  step("CRDs installed");

  const objects = quickstartObjects(options);
  const cacheDir = join(options.stateDir, "models");
  const quickstartModel = objects.find((o) => o.kind === "InferenceModel") as unknown as InferenceModel | undefined;
  if (quickstartModel && seedCache(cacheDir, quickstartModel.spec.source))
    step(`model file taken from ${sharedModel}, no download needed`);

  const common = {
    KUBECONFIG: kubeconfigPath,
    POMONA_NAMESPACE: options.systemNamespace,
    POMONA_NODE_TOKEN: nodeToken,
  };
  supervisor.start({
    name: "operator",
    main: "operator/main.ts",
    env: { ...common, POMONA_OPERATOR_PORT: String(options.operatorPort) },
  });
  const agentStarted = Date.now();
  supervisor.start({
    name: "node-agent",
    main: "node-agent/main.ts",
    env: {
      ...common,
      POMONA_NODE_NAME: localNodeName(),
      POMONA_NODE_MODE: "virtual",
      POMONA_AGENT_PORT: String(options.agentPort),
      POMONA_CACHE_DIR: cacheDir,
    },
  });
  supervisor.start({
    name: "gateway",
    main: "gateway/main.ts",
    env: { ...common, POMONA_GATEWAY_PORT: String(options.gatewayPort), POMONA_GATEWAY_HOST: "127.0.0.1" },
  });
  const baseUrl = `http://127.0.0.1:${options.gatewayPort}`;
  recordGatewayUrl(options.stateDir, baseUrl);
  step(`operator, node-agent and gateway started; logs in ${join(options.stateDir, "logs")}`);

  for (const o of objects) await poll(() => apply(kube, o).then(() => true as const));
  const model = quickstartModel?.metadata.name ?? "stories";
  const keyName = objects.find((o) => o.kind === "ApiKey")?.metadata?.name ?? "quickstart";
  step(`applied examples/quickstart.yaml in namespace ${options.namespace}`);

  await waitForModel(kube, options.namespace, model, localNodeName(), agentStarted);
  const key = await waitForKey(kube, options.namespace, keyName);
  await waitForAnswer(baseUrl, key, model);
  return { baseUrl, model, keyName, key };
}
