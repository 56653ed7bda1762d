import { gatewayNodeFlags, nodeTokenSecret } from "../../crds/api/well-known.ts";
import type { PomonaSettings } from "../settings.ts";
import {
  componentLabels,
  containerSecurityContext,
  fieldEnv,
  httpProbes,
  type KubeObject,
  nodeTokenMountPath,
  podBasics,
  selectorLabels,
} from "./object.ts";
import { image } from "./operator.ts";
import { serviceAccountName } from "./rbac.ts";

export const gatewayName = "pomona-gateway";
/** The Service of the internal port (/metrics, probes); the client-facing Service and Ingress never expose it. */
export const gatewayAdminName = "pomona-gateway-admin";
const adminListenerLabel = { "pomona.dev/listener": "admin" };

/** The gateway's address inside the cluster. */
export const redisUrl = (settings: PomonaSettings) => `redis://pomona-redis.${settings.namespace}.svc:6379`;

function deployment(settings: PomonaSettings): KubeObject {
  const { gateway } = settings;
  const labels = componentLabels("gateway");
  const env = [
    fieldEnv("POMONA_NAMESPACE", "metadata.namespace"),
    { name: "POMONA_GATEWAY_PORT", value: "8080" },
    { name: "POMONA_GATEWAY_HOST", value: "0.0.0.0" },
    { name: "POMONA_GATEWAY_ADMIN_PORT", value: String(gateway.adminPort) },
    { name: "POMONA_GATEWAY_ADMIN_HOST", value: "0.0.0.0" },
    // Only when set: the API server drops an empty value, which would read back as a change.
    ...(gateway.trustedProxies.length > 0
      ? [{ name: "POMONA_GATEWAY_TRUSTED_PROXIES", value: gateway.trustedProxies.join(",") }]
      : []),
    ...(gateway.corsOrigins.length > 0
      ? [{ name: "POMONA_GATEWAY_CORS_ORIGINS", value: gateway.corsOrigins.join(",") }]
      : []),
    { name: "POMONA_GATEWAY_MAX_CONNECTIONS_PER_CLIENT", value: String(gateway.maxConnectionsPerClient) },
    { name: "POMONA_NODE_TOKEN_FILE", value: `${nodeTokenMountPath}/token` },
    { name: "POMONA_LOG_LEVEL", value: gateway.logLevel },
    { name: "POMONA_LIMITS_ON_REDIS_FAILURE", value: gateway.limitsOnRedisFailure },
    ...(settings.redis.enabled ? [{ name: "POMONA_REDIS_URL", value: redisUrl(settings) }] : []),
  ];
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: gatewayName, namespace: settings.namespace, labels },
    spec: {
      // With an HPA the replica count is the autoscaler's; a fixed one here would fight it on every update.
      ...(gateway.autoscaling.enabled ? {} : { replicas: gateway.replicas }),
      selector: { matchLabels: selectorLabels("gateway") },
      template: {
        metadata: { labels },
        spec: {
          serviceAccountName: serviceAccountName("gateway"),
          ...podBasics(settings),
          containers: [
            {
              name: "gateway",
              image: image(settings),
              imagePullPolicy: settings.image.pullPolicy,
              command: ["node", ...gatewayNodeFlags, "gateway/main.ts"],
              env,
              ports: [
                { name: "http", containerPort: 8080 },
                { name: "admin", containerPort: gateway.adminPort },
              ],
              ...httpProbes("admin"),
              volumeMounts: [{ name: "node-token", mountPath: nodeTokenMountPath, readOnly: true }],
              resources: gateway.resources,
              securityContext: containerSecurityContext,
            },
          ],
          volumes: [{ name: "node-token", secret: { secretName: nodeTokenSecret } }],
        },
      },
    },
  };
}

function service(settings: PomonaSettings): KubeObject {
  const { service } = settings.gateway;
  const port = {
    name: "http",
    port: service.port,
    targetPort: "http",
    ...(service.type === "NodePort" && service.nodePort !== undefined ? { nodePort: service.nodePort } : {}),
  };
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: gatewayName, namespace: settings.namespace, labels: componentLabels("gateway") },
    spec: { type: service.type, selector: selectorLabels("gateway"), ports: [port] },
  };
}

function adminService(settings: PomonaSettings): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name: gatewayAdminName,
      namespace: settings.namespace,
      labels: { ...componentLabels("gateway"), ...adminListenerLabel },
    },
    spec: {
      type: "ClusterIP",
      selector: selectorLabels("gateway"),
      ports: [{ name: "admin", port: settings.gateway.adminPort, targetPort: "admin" }],
    },
  };
}

function autoscaler(settings: PomonaSettings): KubeObject {
  const { autoscaling } = settings.gateway;
  return {
    apiVersion: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    metadata: { name: gatewayName, namespace: settings.namespace, labels: componentLabels("gateway") },
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: gatewayName },
      minReplicas: autoscaling.minReplicas,
      maxReplicas: autoscaling.maxReplicas,
      metrics: [
        {
          type: "Resource",
          resource: {
            name: "cpu",
            target: { type: "Utilization", averageUtilization: autoscaling.targetCPUUtilizationPercentage },
          },
        },
      ],
    },
  };
}

function ingress(settings: PomonaSettings): KubeObject {
  const { ingress } = settings.gateway;
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "Ingress",
    metadata: {
      name: gatewayName,
      namespace: settings.namespace,
      labels: componentLabels("gateway"),
      annotations: ingress.annotations,
    },
    spec: {
      ...(ingress.className ? { ingressClassName: ingress.className } : {}),
      ...(ingress.tlsSecretName ? { tls: [{ hosts: [ingress.host], secretName: ingress.tlsSecretName }] } : {}),
      rules: [
        {
          host: ingress.host,
          http: {
            paths: [
              {
                path: "/",
                pathType: "Prefix",
                backend: { service: { name: gatewayName, port: { name: "http" } } },
              },
            ],
          },
        },
      ],
    },
  };
}

export function gatewayObjects(settings: PomonaSettings): KubeObject[] {
  const { gateway } = settings;
  const objects = [
    deployment(settings),
    service(settings),
    adminService(settings),
    {
      apiVersion: "policy/v1",
      kind: "PodDisruptionBudget",
      metadata: { name: gatewayName, namespace: settings.namespace, labels: componentLabels("gateway") },
      spec: {
        minAvailable: gateway.podDisruptionBudget.minAvailable,
        selector: { matchLabels: selectorLabels("gateway") },
      },
    },
  ];
  if (gateway.autoscaling.enabled) objects.push(autoscaler(settings));
  if (gateway.ingress.enabled) objects.push(ingress(settings));
  if (settings.serviceMonitor.enabled) {
    objects.push({
      apiVersion: "monitoring.coreos.com/v1",
      kind: "ServiceMonitor",
      metadata: { name: gatewayName, namespace: settings.namespace, labels: componentLabels("gateway") },
      spec: {
        // The internal Service only: metrics are not on the client-facing port.
        selector: { matchLabels: { ...selectorLabels("gateway"), ...adminListenerLabel } },
        endpoints: [{ port: "admin", path: "/metrics", interval: settings.serviceMonitor.interval }],
      },
    });
  }
  return objects;
}

/** Where clients reach the gateway, for the stack's outputs. */
export function gatewayUrl(settings: PomonaSettings): string {
  const { ingress, service } = settings.gateway;
  if (ingress.enabled) return `${ingress.tlsSecretName ? "https" : "http"}://${ingress.host}/v1`;
  return `http://${gatewayName}.${settings.namespace}.svc:${service.port}/v1`;
}
