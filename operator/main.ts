/**
 * The Pomona operator: leader-elected; while leading it runs the InferenceModel,
 * ApiKey and RateLimitPolicy controllers and keeps the gateway config published.
 */
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { operatorLeaseName } from "../crds/api/index.ts";
import { ensureHashingSecret } from "./api-key/hashing-keys.ts";
import { createApiKeyReconciler } from "./api-key/reconcile.ts";
import { createCluster } from "./cluster.ts";
import { loadConfig } from "./config.ts";
import { createGatewayConfigLoop, debounce } from "./gateway-config/loop.ts";
import { serveHealth } from "./health.ts";
import { leaseExpiredForMs } from "./inference-model/node-view.ts";
import { createModelReconciler, modelsOnNode } from "./inference-model/reconcile.ts";
import { reuseConnections } from "./kube-connections.ts";
import { loadOrCreateCa } from "./node-identity/certificate-authority.ts";
import { createGatewayCredentialReconciler } from "./node-identity/gateway-credential.ts";
import { certificateRequestInformer, createNodeCertificateSigner } from "./node-identity/node-certificates.ts";
import { createPolicyReconciler } from "./rate-limit-policy/reconcile.ts";
import { Controller } from "./runtime/controller.ts";
import { keyOf } from "./runtime/informer.ts";
import { LeaderElector } from "./runtime/leader.ts";
import { createLogger } from "./runtime/log.ts";
import { createMetrics } from "./runtime/metrics.ts";

const log = createLogger({ component: "operator" });
let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (err) {
  log.error("bad configuration", { error: (err as Error).message });
  process.exit(2);
}

const kubeConfig = new KubeConfig();
if (process.env.KUBECONFIG) kubeConfig.loadFromFile(process.env.KUBECONFIG);
else kubeConfig.loadFromCluster();
reuseConnections(kubeConfig);

const metrics = createMetrics();
const cluster = createCluster(kubeConfig, log, metrics, {
  namespace: config.namespace,
  servedNamespaces: config.servedNamespaces,
});
const informers: { start: () => Promise<void>; stop: () => void; hasSynced: boolean }[] = [
  cluster.models,
  cluster.replicas,
  cluster.keys,
  cluster.policies,
  cluster.nodes,
  cluster.nodeLeases,
  ...cluster.keySecrets,
  cluster.hashingSecret,
];
const certificateRequests = certificateRequestInformer(kubeConfig, log);
informers.push(certificateRequests);
let synced = false;
const controllers: Controller[] = [];
let nodeWatch: NodeJS.Timeout | undefined;

const leaseDurationSeconds = 15;
const elector = new LeaderElector(
  kubeConfig,
  {
    namespace: config.namespace,
    name: operatorLeaseName,
    identity: config.identity,
    leaseDurationSeconds,
    renewMs: 2_000,
    onStartedLeading: () => {
      metrics.isLeader.set(1);
      void lead();
    },
    onStoppedLeading: () => {
      // Acting without the lease could fight the new leader: stop everything and exit to start over as a standby.
      metrics.isLeader.set(0);
      for (const c of controllers) c.stop();
      log.error("leadership lost; exiting");
      process.exit(1);
    },
  },
  log,
);

async function lead(): Promise<void> {
  const models = new Controller("inferencemodel", createModelReconciler(cluster, config), log, metrics);
  models
    .for(cluster.models)
    .owns(cluster.replicas, "InferenceModel")
    .watches(cluster.policies, (p) =>
      cluster.models
        .list(p.metadata?.namespace)
        .filter((m) => m.spec.rateLimitPolicy === p.metadata?.name)
        .map(keyOf),
    );
  const keys = new Controller("apikey", createApiKeyReconciler(cluster), log, metrics);
  keys
    .for(cluster.keys)
    // A new hashing key means every key is hashed again.
    .watches(cluster.hashingSecret, () => cluster.keys.list().map(keyOf))
    .watches(cluster.policies, (p) =>
      cluster.keys
        .list(p.metadata?.namespace)
        .filter((k) => k.spec.rateLimitPolicy === p.metadata?.name)
        .map(keyOf),
    );
  for (const secrets of cluster.keySecrets) keys.owns(secrets, "ApiKey");
  const policyOf = (o: { metadata?: { namespace?: string }; spec?: { rateLimitPolicy?: string } }) =>
    o.spec?.rateLimitPolicy ? [`${o.metadata?.namespace}/${o.spec.rateLimitPolicy}`] : [];
  const policies = new Controller("ratelimitpolicy", createPolicyReconciler(cluster), log, metrics);
  policies.for(cluster.policies).watches(cluster.keys, policyOf).watches(cluster.models, policyOf);

  const loop = createGatewayConfigLoop(cluster, { namespace: config.namespace });
  const gateway = new Controller("gatewayconfig", loop.publishIfChanged, log, metrics);
  const stale = debounce(() => gateway.queue.add("gateway-config"), loop.quietMs, loop.maxDelayMs);
  for (const informer of [cluster.models, cluster.replicas, cluster.keys, cluster.policies]) informer.onChange(stale);

  // Keys cannot be hashed without it; keep trying while the API server is away.
  for (;;) {
    try {
      await ensureHashingSecret(cluster);
      break;
    } catch (err) {
      log.warn("cannot create the API key hashing secret yet; retrying", { error: (err as Error).message });
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }

  const core = kubeConfig.makeApiClient(CoreV1Api);
  const ca = await loadOrCreateCa(core, config.namespace);
  const signer = new Controller(
    "node-certificates",
    createNodeCertificateSigner(cluster, certificateRequests, {
      ca,
      nodeAgentServiceAccount: config.nodeAgentServiceAccount,
      lifetimeMs: config.nodeCertLifetimeMs,
    }),
    log,
    metrics,
  );
  signer.for(certificateRequests);
  const gatewayCredential = new Controller(
    "gateway-credential",
    createGatewayCredentialReconciler(core, { namespace: config.namespace, ca, lifetimeMs: config.nodeCertLifetimeMs }),
    log,
    metrics,
  );

  controllers.push(models, keys, policies, gateway, signer, gatewayCredential);
  await Promise.all(informers.map((i) => i.start()));
  while (!informers.every((i) => i.hasSynced)) await new Promise((r) => setTimeout(r, 100));
  synced = true;
  log.info("caches synced", { models: cluster.models.list().length, replicas: cluster.replicas.list().length });
  models.start(4);
  keys.start(4);
  policies.start(1);
  gateway.start(1);
  signer.start(1);
  gatewayCredential.start(1);
  gatewayCredential.queue.add("gateway-client");
  stale();

  // A node that stops renewing its Lease sends no event; look for lost nodes every second.
  const lost = new Set<string>();
  nodeWatch = setInterval(() => {
    const now = Date.now();
    const nodeNames = new Set([
      ...cluster.nodes.list().map((n) => n.metadata?.name ?? ""),
      ...cluster.replicas.list().map((r) => r.spec.nodeName),
    ]);
    for (const node of nodeNames) {
      const gone =
        !cluster.nodes.get(node) ||
        leaseExpiredForMs(cluster.nodeLeases.get(node, "kube-node-lease"), now) > config.nodeLostAfterSeconds * 1000;
      if (gone && !lost.has(node)) {
        lost.add(node);
        log.warn("node lost", { node });
        for (const key of modelsOnNode(cluster, node)) models.queue.add(key);
      } else if (!gone && lost.delete(node)) {
        log.info("node back", { node });
      }
    }
    // Nodes also change free memory: models waiting for room look again when one is back.
  }, 1_000);
  nodeWatch.unref();
}

const server = await serveHealth(config.port, metrics.registry, () => !elector.isLeader || synced);
log.info("operator started", {
  identity: config.identity,
  namespace: config.namespace,
  port: config.port,
  servedNamespaces: config.servedNamespaces?.join(",") ?? "all",
});
elector.start();

const shutdown = async (signal: string) => {
  log.info("shutting down", { signal });
  if (nodeWatch) clearInterval(nodeWatch);
  for (const c of controllers) c.stop();
  for (const i of informers) i.stop();
  await elector.stop();
  server.close();
  process.exit(0);
};
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
