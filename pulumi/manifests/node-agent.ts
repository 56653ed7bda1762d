import { inferenceNodeTaint, nodeTokenSecret, labels as wellKnownLabels } from "../../crds/api/well-known.ts";
import type { PomonaSettings } from "../settings.ts";
import {
  allowedHostsEnv,
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

const cacheMountPath = "/var/cache/pomona/models";

/** The agent on Linux inference nodes, beside their kubelet; Macs run it natively (docs/macos-node-agent.md). */
export function nodeAgentObjects(settings: PomonaSettings): KubeObject[] {
  const { nodeAgent } = settings;
  if (!nodeAgent.enabled) return [];
  const labels = componentLabels("node-agent");
  const env = [
    fieldEnv("POMONA_NODE_NAME", "spec.nodeName"),
    { name: "POMONA_NODE_MODE", value: "attached" },
    // The gateway reaches each agent at its node's address, as written in replica endpoints.
    fieldEnv("POMONA_AGENT_ADDRESS", "status.hostIP"),
    { name: "POMONA_AGENT_PORT", value: String(nodeAgent.port) },
    { name: "POMONA_NODE_TOKEN_FILE", value: `${nodeTokenMountPath}/token` },
    { name: "POMONA_CACHE_DIR", value: cacheMountPath },
    ...(nodeAgent.modelMemory ? [{ name: "POMONA_MODEL_MEMORY", value: nodeAgent.modelMemory }] : []),
    // Only when set: the API server drops an empty value, which would read back as a change.
    ...allowedHostsEnv(settings),
    // node-llama-cpp writes beside HOME; the root filesystem is read-only.
    { name: "HOME", value: "/tmp" },
  ];
  return [
    {
      apiVersion: "apps/v1",
      kind: "DaemonSet",
      metadata: { name: "pomona-node-agent", namespace: settings.namespace, labels },
      spec: {
        selector: { matchLabels: selectorLabels("node-agent") },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: serviceAccountName("node-agent"),
            // The agent serves on the node's own address: the operator signs its certificate only for an
            // address the Node has registered, and the gateway checks the endpoint against it.
            hostNetwork: true,
            dnsPolicy: "ClusterFirstWithHostNet",
            nodeSelector: { [wellKnownLabels.inferenceNode]: "true", "kubernetes.io/os": "linux" },
            tolerations: [{ ...inferenceNodeTaint, operator: "Equal" }],
            ...podBasics(settings),
            containers: [
              {
                name: "node-agent",
                image: image(settings),
                imagePullPolicy: settings.image.pullPolicy,
                command: ["node", "node-agent/main.ts"],
                env,
                ports: [{ name: "http", containerPort: nodeAgent.port }],
                ...httpProbes("http", "HTTPS"),
                volumeMounts: [
                  { name: "node-token", mountPath: nodeTokenMountPath, readOnly: true },
                  { name: "model-cache", mountPath: cacheMountPath },
                  { name: "tmp", mountPath: "/tmp" },
                ],
                resources: nodeAgent.resources,
                securityContext: containerSecurityContext,
              },
            ],
            volumes: [
              { name: "node-token", secret: { secretName: nodeTokenSecret } },
              { name: "model-cache", hostPath: { path: nodeAgent.cacheHostPath, type: "DirectoryOrCreate" } },
              { name: "tmp", emptyDir: {} },
            ],
          },
        },
      },
    },
  ];
}
