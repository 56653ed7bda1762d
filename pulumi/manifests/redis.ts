import type { PomonaSettings } from "../settings.ts";
import { componentLabels, containerSecurityContext, type KubeObject, selectorLabels } from "./object.ts";

/** One Redis for the gateway's shared limits. Counters are short-lived, so no persistence. */
export function redisObjects(settings: PomonaSettings): KubeObject[] {
  if (!settings.redis.enabled) return [];
  const labels = componentLabels("redis");
  const metadata = { name: "pomona-redis", namespace: settings.namespace, labels };
  return [
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata,
      spec: {
        replicas: 1,
        selector: { matchLabels: selectorLabels("redis") },
        template: {
          metadata: { labels },
          spec: {
            securityContext: { runAsNonRoot: true, runAsUser: 999, seccompProfile: { type: "RuntimeDefault" } },
            containers: [
              {
                name: "redis",
                image: settings.redis.image,
                args: ["--save", "", "--appendonly", "no"],
                ports: [{ name: "redis", containerPort: 6379 }],
                readinessProbe: { tcpSocket: { port: "redis" } },
                resources: settings.redis.resources,
                securityContext: containerSecurityContext,
              },
            ],
          },
        },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata,
      spec: { selector: selectorLabels("redis"), ports: [{ name: "redis", port: 6379, targetPort: "redis" }] },
    },
  ];
}
