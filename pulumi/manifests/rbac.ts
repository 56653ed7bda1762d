/**
 * Service accounts and least-privilege RBAC for each component, as in docs/components.md. Kubernetes RBAC
 * cannot scope a node-agent to its own node; nodeAgentAdmissionPolicy does that.
 */
import { allConfigSecretNames } from "../../crds/api/gateway-config-codec.ts";
import { keyHashingSecret } from "../../crds/api/key-hashing.ts";
import { nodeIdentity, nodeTokenSecret, operatorLeaseName } from "../../crds/api/well-known.ts";
import type { PomonaSettings } from "../settings.ts";
import { componentLabels, type KubeObject } from "./object.ts";

const rbacApi = "rbac.authorization.k8s.io/v1";
const nodeLeaseNamespace = "kube-node-lease";

export type Component = "operator" | "gateway" | "node-agent";

export const serviceAccountName = (component: Component) => `pomona-${component}`;

export const serviceAccountUser = (namespace: string, component: Component) =>
  `system:serviceaccount:${namespace}:${serviceAccountName(component)}`;

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

export const operatorClusterRules: Rule[] = [
  {
    apiGroups: ["pomona.dev"],
    resources: ["inferencemodels", "apikeys", "ratelimitpolicies"],
    verbs: ["get", "list", "watch"],
  },
  {
    apiGroups: ["pomona.dev"],
    resources: ["inferencemodels/status", "apikeys/status", "ratelimitpolicies/status"],
    verbs: ["get", "update", "patch"],
  },
  {
    apiGroups: ["pomona.dev"],
    resources: ["modelreplicas"],
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"],
  },
  // A lost node's replicas are marked by the operator.
  { apiGroups: ["pomona.dev"], resources: ["modelreplicas/status"], verbs: ["get", "update", "patch"] },
  { apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch"] },
  { apiGroups: ["", "events.k8s.io"], resources: ["events"], verbs: ["create", "patch"] },
  // Node identity: the operator approves and signs node-agents' certificate requests for its own signer only.
  { apiGroups: ["certificates.k8s.io"], resources: ["certificatesigningrequests"], verbs: ["get", "list", "watch"] },
  {
    apiGroups: ["certificates.k8s.io"],
    resources: ["certificatesigningrequests/approval", "certificatesigningrequests/status"],
    verbs: ["update"],
  },
  {
    apiGroups: ["certificates.k8s.io"],
    resources: ["signers"],
    resourceNames: [nodeIdentity.signerName],
    verbs: ["approve", "sign"],
  },
];

/**
 * Secrets only in the namespaces the operator serves (operatorSecretNamespaces), a Role each: minted key
 * Secrets beside their ApiKeys, users' opted-in Secrets, and in the system namespace the gateway config and
 * the API key hashing keys.
 */
export const operatorSecretRules: Rule[] = [
  { apiGroups: [""], resources: ["secrets"], verbs: ["get", "list", "watch", "create", "update", "patch", "delete"] },
];

/** The release namespace first, then operator.watchNamespaces, each once. */
export const operatorSecretNamespaces = (settings: PomonaSettings): string[] => [
  ...new Set([settings.namespace, ...settings.operator.watchNamespaces]),
];

export const operatorLeaderRules: Rule[] = [
  // create cannot be limited by name: the name is not known before the object exists.
  { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["create"] },
  {
    apiGroups: ["coordination.k8s.io"],
    resources: ["leases"],
    resourceNames: [operatorLeaseName],
    verbs: ["get", "watch", "update", "patch"],
  },
];

export const operatorNodeLeaseRules: Rule[] = [
  { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "list", "watch"] },
];

export const gatewayRules: Rule[] = [
  {
    apiGroups: [""],
    resources: ["secrets"],
    resourceNames: [...allConfigSecretNames(), nodeTokenSecret, keyHashingSecret, nodeIdentity.gatewayClientSecret],
    verbs: ["get", "watch"],
  },
];

export const nodeAgentClusterRules: Rule[] = [
  { apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch", "create", "update", "patch"] },
  // The model-memory extended resource lives in the Node's status.
  { apiGroups: [""], resources: ["nodes/status"], verbs: ["get", "update", "patch"] },
  { apiGroups: ["pomona.dev"], resources: ["modelreplicas"], verbs: ["get", "list", "watch"] },
  { apiGroups: ["pomona.dev"], resources: ["modelreplicas/status"], verbs: ["get", "update", "patch"] },
  // Its serving certificate: a request the operator signs, deleted once signed.
  {
    apiGroups: ["certificates.k8s.io"],
    resources: ["certificatesigningrequests"],
    verbs: ["get", "list", "watch", "create", "delete"],
  },
];

export const nodeAgentLeaseRules: Rule[] = [
  {
    apiGroups: ["coordination.k8s.io"],
    resources: ["leases"],
    verbs: ["get", "list", "watch", "create", "update", "patch"],
  },
];

function serviceAccount(namespace: string, component: Component): KubeObject {
  const metadata = { name: serviceAccountName(component), namespace, labels: componentLabels(component) };
  return { apiVersion: "v1", kind: "ServiceAccount", metadata };
}

/** A (Cluster)Role and its binding to one component's service account. */
function grant(
  settings: PomonaSettings,
  component: Component,
  name: string,
  rules: Rule[],
  roleNamespace?: string,
): KubeObject[] {
  const kind = roleNamespace === undefined ? "ClusterRole" : "Role";
  const metadata = {
    name,
    ...(roleNamespace === undefined ? {} : { namespace: roleNamespace }),
    labels: componentLabels(component),
  };
  return [
    { apiVersion: rbacApi, kind, metadata, rules },
    {
      apiVersion: rbacApi,
      kind: `${kind}Binding`,
      metadata,
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind, name },
      subjects: [{ kind: "ServiceAccount", name: serviceAccountName(component), namespace: settings.namespace }],
    },
  ];
}

export function rbacObjects(settings: PomonaSettings): KubeObject[] {
  const ns = settings.namespace;
  const objects = [
    serviceAccount(ns, "operator"),
    serviceAccount(ns, "gateway"),
    ...grant(settings, "operator", "pomona-operator", operatorClusterRules),
    ...operatorSecretNamespaces(settings).flatMap((n) =>
      grant(settings, "operator", "pomona-operator-secrets", operatorSecretRules, n),
    ),
    ...grant(settings, "operator", "pomona-operator-leader", operatorLeaderRules, ns),
    ...grant(settings, "operator", "pomona-operator-node-leases", operatorNodeLeaseRules, nodeLeaseNamespace),
    ...grant(settings, "gateway", "pomona-gateway", gatewayRules, ns),
  ];
  if (settings.nodeAgent.enabled) {
    objects.push(
      serviceAccount(ns, "node-agent"),
      ...grant(settings, "node-agent", "pomona-node-agent", nodeAgentClusterRules),
      ...grant(settings, "node-agent", "pomona-node-agent-lease", nodeAgentLeaseRules, nodeLeaseNamespace),
    );
  }
  return objects;
}
