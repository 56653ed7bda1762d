/** A Kubernetes object as plain data: what the stack hands to Pulumi and what the tests apply to a server. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

export const partOf = { "app.kubernetes.io/name": "pomona", "app.kubernetes.io/part-of": "pomona" };

export function selectorLabels(component: string): Record<string, string> {
  return { "app.kubernetes.io/name": "pomona", "app.kubernetes.io/component": component };
}

export function componentLabels(component: string): Record<string, string> {
  return { ...partOf, "app.kubernetes.io/managed-by": "pulumi", "app.kubernetes.io/component": component };
}

export const podSecurityContext = {
  runAsNonRoot: true,
  runAsUser: 1000,
  runAsGroup: 1000,
  fsGroup: 1000,
  seccompProfile: { type: "RuntimeDefault" },
};

export const containerSecurityContext = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ["ALL"] },
};

export const nodeTokenMountPath = "/var/run/pomona/node-token";

export function fieldEnv(name: string, fieldPath: string) {
  return { name, valueFrom: { fieldRef: { fieldPath } } };
}

export function httpProbes(port: string, scheme: "HTTP" | "HTTPS" = "HTTP") {
  const httpGet = (path: string) => ({ path, port, ...(scheme === "HTTPS" ? { scheme } : {}) });
  return { livenessProbe: { httpGet: httpGet("/healthz") }, readinessProbe: { httpGet: httpGet("/readyz") } };
}

/** The Pod spec fields every Pomona workload shares. */
export function podBasics(settings: { imagePullSecrets: { name: string }[] }) {
  return {
    ...(settings.imagePullSecrets.length > 0 ? { imagePullSecrets: settings.imagePullSecrets } : {}),
    securityContext: podSecurityContext,
  };
}

/** POMONA_MODEL_ALLOWED_HOSTS when hosts beyond the Hub's are allowed; absent otherwise (the API server drops an empty value). */
export function allowedHostsEnv(settings: { modelSources: { allowedHosts: string[] } }) {
  const hosts = settings.modelSources.allowedHosts;
  return hosts.length > 0 ? [{ name: "POMONA_MODEL_ALLOWED_HOSTS", value: hosts.join(",") }] : [];
}
