import { readFileSync } from "node:fs";
import { join } from "node:path";
import { operatorNodeFlags } from "../../crds/api/well-known.ts";
import type { PomonaSettings } from "../settings.ts";
import {
  allowedHostsEnv,
  componentLabels,
  containerSecurityContext,
  fieldEnv,
  httpProbes,
  type KubeObject,
  podBasics,
  selectorLabels,
} from "./object.ts";
import { operatorSecretNamespaces, serviceAccountName } from "./rbac.ts";

/** The release of this checkout, the image tag when none is set (the chart uses its appVersion, the same). */
export const releaseVersion = (
  JSON.parse(readFileSync(join(import.meta.dirname, "..", "..", "package.json"), "utf8")) as { version: string }
).version;

export const image = (settings: PomonaSettings) =>
  `${settings.image.repository}:${settings.image.tag || releaseVersion}`;

/** Two replicas by default: one holds the leader Lease and reconciles, the other takes over. */
export function operatorObjects(settings: PomonaSettings): KubeObject[] {
  const labels = componentLabels("operator");
  return [
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "pomona-operator", namespace: settings.namespace, labels },
      spec: {
        replicas: settings.operator.replicas,
        selector: { matchLabels: selectorLabels("operator") },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: serviceAccountName("operator"),
            ...podBasics(settings),
            containers: [
              {
                name: "operator",
                image: image(settings),
                imagePullPolicy: settings.image.pullPolicy,
                command: ["node", ...operatorNodeFlags, "operator/main.ts"],
                env: [
                  fieldEnv("POMONA_NAMESPACE", "metadata.namespace"),
                  // The Pod name is the identity in the leader Lease, so `kubectl get lease` names the leader.
                  fieldEnv("POMONA_OPERATOR_ID", "metadata.name"),
                  { name: "POMONA_OPERATOR_PORT", value: "8081" },
                  { name: "POMONA_NODE_LOST_AFTER_SECONDS", value: String(settings.operator.nodeLostAfterSeconds) },
                  // The operator holds Secret rights only there (rbac.ts), so it serves only there.
                  { name: "POMONA_WATCH_NAMESPACES", value: operatorSecretNamespaces(settings).join(",") },
                  // Certificate requests from this ServiceAccount are signed only for the node its Pod runs on.
                  {
                    name: "POMONA_NODE_AGENT_SERVICE_ACCOUNT",
                    value: `${settings.namespace}/${serviceAccountName("node-agent")}`,
                  },
                  ...allowedHostsEnv(settings),
                ],
                ports: [{ name: "http", containerPort: 8081 }],
                ...httpProbes("http"),
                resources: settings.operator.resources,
                securityContext: containerSecurityContext,
              },
            ],
          },
        },
      },
    },
  ];
}
