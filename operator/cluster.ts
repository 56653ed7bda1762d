/** The shared caches and writers every controller of this operator uses. */
import type { V1Lease, V1Node, V1Secret } from "@kubernetes/client-node";
import {
  API_VERSION,
  type ApiKey,
  type InferenceModel,
  type ModelReplica,
  type RateLimitPolicy,
} from "../crds/api/index.ts";
import { nodeLeaseNamespace } from "./inference-model/node-view.ts";
import { Applier } from "./runtime/apply.ts";
import { EventRecorder } from "./runtime/events.ts";
import type { Informer } from "./runtime/informer.ts";
import type { Manager } from "./runtime/manager.ts";

/** Label on key Secrets the operator mints, so it watches only those. */
export const mintedKeyLabel = "pomona.dev/api-key";
/** Label on the hashing-key Secret the operator creates, so it watches only that one in the system namespace. */
export const keyHashingLabel = "pomona.dev/key-hashing";

/**
 * Index of the ApiKeys and InferenceModels in the cache by the RateLimitPolicy they name, filed under the
 * policy's own key (`namespace/name`), so finding what names a policy costs its users, not the whole namespace.
 */
export const byPolicy = "rateLimitPolicy";
export const policyOf = (o: { metadata?: { namespace?: string }; spec?: { rateLimitPolicy?: string } }): string[] =>
  o.spec?.rateLimitPolicy ? [`${o.metadata?.namespace}/${o.spec.rateLimitPolicy}`] : [];

export interface ClusterScope {
  /** The system namespace: the operator's Lease, the gateway config, the hashing keys. */
  namespace: string;
  /** Namespaces whose ApiKeys get key Secrets; undefined serves every namespace (and needs cluster-wide Secret rights). */
  servedNamespaces?: readonly string[];
}

/** The informers come from the manager, which starts them and shares one per source. */
export function createCluster(manager: Manager, scope: ClusterScope) {
  const { kubeConfig, log, metrics } = manager;
  const events = new EventRecorder(kubeConfig, log);
  const crd = <T extends ModelReplica | InferenceModel | ApiKey | RateLimitPolicy>(kind: string, plural: string) => {
    // biome-ignore lint/suspicious/noExplicitAny: the client's KubernetesObject and our Resource differ only in optionality.
    const informer = manager.informer<any>({
      path: `/apis/${API_VERSION}/${plural}`,
      kind,
    }) as Informer<T & { metadata: NonNullable<T["metadata"]> }>;
    // What was said about an object in Events is forgotten with it.
    informer.onDelete((o) => events.forget(o));
    return informer;
  };
  const models = crd<InferenceModel>("InferenceModel", "inferencemodels");
  const keys = crd<ApiKey>("ApiKey", "apikeys");
  models.addIndex(byPolicy, policyOf);
  keys.addIndex(byPolicy, policyOf);
  return {
    kubeConfig,
    log,
    metrics,
    applier: new Applier(kubeConfig),
    events,
    models,
    replicas: crd<ModelReplica>("ModelReplica", "modelreplicas"),
    keys,
    policies: crd<RateLimitPolicy>("RateLimitPolicy", "ratelimitpolicies"),
    nodes: manager.informer<V1Node>({ path: "/api/v1/nodes", kind: "Node" }),
    nodeLeases: manager.informer<V1Lease>({
      path: `/apis/coordination.k8s.io/v1/namespaces/${nodeLeaseNamespace}/leases`,
      kind: "Lease",
    }),
    /** Minted key Secrets: one informer per served namespace, so no right to list Secrets elsewhere is needed. */
    keySecrets: (scope.servedNamespaces ?? [undefined]).map((namespace) =>
      manager.informer<V1Secret>({
        path: namespace ? `/api/v1/namespaces/${namespace}/secrets` : "/api/v1/secrets",
        kind: "Secret",
        labelSelector: `${mintedKeyLabel}=true`,
      }),
    ),
    hashingSecret: manager.informer<V1Secret>({
      path: `/api/v1/namespaces/${scope.namespace}/secrets`,
      kind: "Secret",
      labelSelector: `${keyHashingLabel}=true`,
    }),
    scope,
  };
}

export const servesNamespace = (cluster: Cluster, namespace: string): boolean =>
  cluster.scope.servedNamespaces === undefined || cluster.scope.servedNamespaces.includes(namespace);

export const cachedKeySecret = (cluster: Cluster, name: string, namespace: string): V1Secret | undefined => {
  for (const informer of cluster.keySecrets) {
    const found = informer.get(name, namespace);
    if (found) return found;
  }
  return undefined;
};

export type Cluster = ReturnType<typeof createCluster>;
