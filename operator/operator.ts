/**
 * The Pomona operator: leader-elected; every replica keeps its caches warm, and while leading it runs
 * the InferenceModel, ApiKey and RateLimitPolicy controllers, signs node certificates and keeps the
 * gateway config published. The manager (runtime/manager.ts) does the running; this file only says
 * what runs. The informers are all asked for here, before the manager runs, so standbys fill them too.
 * Started by main.ts.
 */
import { KubeConfig } from "@kubernetes/client-node/dist/config.js";
import { operatorLeaseName } from "../crds/api/index.ts";
import { reuseConnections } from "../kube/connections.ts";
import { objectKey } from "../kube/list-watch.ts";
import { ensureHashingSecret } from "./api-key/hashing-keys.ts";
import { createApiKeyReconciler } from "./api-key/reconcile.ts";
import { byPolicy, createCluster, policyOf } from "./cluster.ts";
import { loadConfig } from "./config.ts";
import { createGatewayConfigLoop, debounce } from "./gateway-config/loop.ts";
import { NodeLossTracker } from "./inference-model/node-loss.ts";
import { createModelReconciler, modelsOnNode } from "./inference-model/reconcile.ts";
import { loadOrCreateCa } from "./node-identity/certificate-authority.ts";
import { createGatewayCredentialReconciler } from "./node-identity/gateway-credential.ts";
import { certificateRequestInformer, createNodeCertificateSigner } from "./node-identity/node-certificates.ts";
import { createPolicyReconciler } from "./rate-limit-policy/reconcile.ts";
import { createLogger } from "./runtime/log.ts";
import { Manager } from "./runtime/manager.ts";
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

const manager = new Manager({
  kubeConfig,
  log,
  metrics: createMetrics(),
  healthPort: config.port,
  leaderElection: {
    namespace: config.namespace,
    name: operatorLeaseName,
    identity: config.identity,
    leaseDurationSeconds: 15,
    renewMs: 2_000,
  },
  cacheSyncTimeoutMs: config.cacheSyncTimeoutMs,
});
const cluster = createCluster(manager, { namespace: config.namespace, servedNamespaces: config.servedNamespaces });
const certificateRequests = certificateRequestInformer(manager);

async function registerControllers(): Promise<void> {
  const models = manager.controller("inferencemodel", createModelReconciler(cluster, config), 4);
  models
    .for(cluster.models)
    .owns(cluster.replicas, "InferenceModel")
    .watches(cluster.policies, (p) => cluster.models.byIndex(byPolicy, objectKey(p)).map(objectKey));
  // A node that stops renewing its Lease sends no event: a timer per node wakes the models on it.
  manager.add(
    new NodeLossTracker({
      nodes: cluster.nodes,
      leases: cluster.nodeLeases,
      graceMs: config.nodeLostAfterSeconds * 1000,
      boundNodes: () => cluster.replicas.list().map((r) => r.spec.nodeName),
      onLost: (node) => {
        log.warn("node lost", { node });
        for (const key of modelsOnNode(cluster, node)) models.queue.add(key);
      },
      onBack: (node) => log.info("node back", { node }),
    }),
  );

  const keys = manager.controller("apikey", createApiKeyReconciler(cluster), 4);
  keys
    .for(cluster.keys)
    // A new hashing key means every key is hashed again.
    .watches(cluster.hashingSecret, () => cluster.keys.list().map(objectKey))
    .watches(cluster.policies, (p) => cluster.keys.byIndex(byPolicy, objectKey(p)).map(objectKey));
  for (const secrets of cluster.keySecrets) keys.owns(secrets, "ApiKey");

  manager
    .controller("ratelimitpolicy", createPolicyReconciler(cluster))
    .for(cluster.policies)
    .watches(cluster.keys, policyOf)
    .watches(cluster.models, policyOf);

  const loop = createGatewayConfigLoop(cluster, { namespace: config.namespace });
  const gateway = manager.controller("gatewayconfig", loop.publishIfChanged);
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

  const ca = await loadOrCreateCa(cluster.applier.rest, config.namespace);
  manager
    .controller(
      "node-certificates",
      createNodeCertificateSigner(cluster, certificateRequests, {
        ca,
        nodeAgentServiceAccount: config.nodeAgentServiceAccount,
        lifetimeMs: config.nodeCertLifetimeMs,
      }),
    )
    .for(certificateRequests);
  const gatewayCredential = manager.controller(
    "gateway-credential",
    createGatewayCredentialReconciler(cluster.applier.rest, {
      namespace: config.namespace,
      ca,
      lifetimeMs: config.nodeCertLifetimeMs,
    }),
  );

  // Work with no watch event to start it: the first publication and the gateway's client certificate.
  manager.add({
    start: () => {
      gatewayCredential.queue.add("gateway-client");
      stale();
    },
    stop: () => {},
  });
}

await manager.run(registerControllers);
log.info("operator started", {
  identity: config.identity,
  namespace: config.namespace,
  port: config.port,
  servedNamespaces: config.servedNamespaces?.join(",") ?? "all",
});

const shutdown = (signal: string) => {
  log.info("shutting down", { signal });
  manager.shutdown().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
