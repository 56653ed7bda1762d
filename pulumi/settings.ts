/**
 * Every setting of a Pomona stack with its default, in one place. Pulumi config supplies any part of it
 * (`pulumi config set --path pomona:gateway.replicas 3`); zod fills the rest and refuses bad values at
 * the edge. charts/pomona/values.schema.json is generated from this schema (`npm run generate`);
 * charts/pomona/values.yaml holds the same defaults, which a test checks; the parity test renders both.
 */
import { z } from "zod";

const resources = z.object({
  requests: z.record(z.string(), z.string()).optional(),
  limits: z.record(z.string(), z.string()).optional(),
});

/** The settings' fields and defaults, without the cross-field rule below (the chart's schema is made from these). */
export const settingsFields = z.object({
  namespace: z.string().min(1).default("pomona-system"),
  image: z
    .object({
      repository: z.string().min(1).default("ghcr.io/pomona-dev/pomona"),
      // Empty means the release of this checkout: package.json's version (the chart's appVersion).
      tag: z.string().default(""),
      pullPolicy: z.enum(["Always", "IfNotPresent", "Never"]).default("IfNotPresent"),
    })
    .prefault({}),
  /** Secrets holding credentials for a private registry, e.g. [{ name: "registry" }]. */
  imagePullSecrets: z.array(z.object({ name: z.string().min(1) })).default([]),
  operator: z
    .object({
      replicas: z.int().min(1).default(2),
      nodeLostAfterSeconds: z.int().min(1).default(40),
      /**
       * Namespaces besides the release's whose ApiKeys the operator serves: it may read and write Secrets there
       * (a Role each) and nowhere else. Each must exist before the install.
       */
      watchNamespaces: z
        .array(
          z
            .string()
            .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/)
            .max(63),
        )
        .default([]),
      resources: resources.default({ requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "512Mi" } }),
    })
    .prefault({}),
  gateway: z
    .object({
      replicas: z.int().min(1).default(2),
      logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
      limitsOnRedisFailure: z.enum(["allow", "deny"]).default("allow"),
      resources: resources.default({ requests: { cpu: "250m", memory: "256Mi" }, limits: { memory: "1Gi" } }),
      /** The internal port of /metrics and the probes; only the pomona-gateway-admin Service exposes it. */
      adminPort: z.int().min(1).max(65535).default(9090),
      /** Addresses or CIDRs of the proxies in front (the Ingress controller) whose X-Forwarded-For is believed. */
      trustedProxies: z.array(z.string().min(1)).default([]),
      /** Origins whose browser pages may call the /v1 API (CORS); "*" allows any; empty turns CORS off. */
      corsOrigins: z
        .array(z.string().regex(/^(\*|https?:\/\/[^/?#@\s,]+)$/, "an origin: scheme://host[:port], or *"))
        .default([]),
      /** Open connections one client address may hold on the public port (trusted proxies are exempt). */
      maxConnectionsPerClient: z.int().min(1).default(256),
      service: z
        .object({
          type: z.enum(["ClusterIP", "NodePort", "LoadBalancer"]).default("ClusterIP"),
          port: z.int().min(1).max(65535).default(8080),
          nodePort: z.int().min(30000).max(32767).optional(),
        })
        .prefault({}),
      podDisruptionBudget: z.object({ minAvailable: z.int().min(0).default(1) }).prefault({}),
      autoscaling: z
        .object({
          enabled: z.boolean().default(false),
          minReplicas: z.int().min(1).default(2),
          maxReplicas: z.int().min(1).default(10),
          targetCPUUtilizationPercentage: z.int().min(1).max(100).default(70),
        })
        .prefault({}),
      ingress: z
        .object({
          enabled: z.boolean().default(false),
          className: z.string().default(""),
          host: z.string().min(1).default("pomona.example.com"),
          tlsSecretName: z.string().default(""),
          annotations: z.record(z.string(), z.string()).default({}),
        })
        .prefault({}),
    })
    .prefault({}),
  nodeAgent: z
    .object({
      enabled: z.boolean().default(true),
      port: z.int().min(1).max(65535).default(8090),
      cacheHostPath: z.string().startsWith("/").default("/var/lib/pomona/models"),
      modelMemory: z.string().default(""),
      resources: resources.default({ requests: { cpu: "1", memory: "1Gi" }, limits: { memory: "8Gi" } }),
    })
    .prefault({}),
  redis: z
    .object({
      // On by default: the default install runs two gateway replicas, which must share their limits.
      enabled: z.boolean().default(true),
      image: z.string().min(1).default("redis:7.4-alpine"),
      resources: resources.default({ requests: { cpu: "50m", memory: "64Mi" }, limits: { memory: "256Mi" } }),
    })
    .prefault({}),
  /** Hosts model files may come from, beyond Hugging Face and its CDN (operator header reads, node downloads). */
  modelSources: z.object({ allowedHosts: z.array(z.string().min(1)).default([]) }).prefault({}),
  serviceMonitor: z.object({ enabled: z.boolean().default(false), interval: z.string().default("30s") }).prefault({}),
  adminKey: z.object({ enabled: z.boolean().default(true), owner: z.string().min(1).default("admin") }).prefault({}),
});

/**
 * Limits cannot multiply: without Redis each gateway replica keeps its own counters, so N replicas would
 * admit N times every per-key limit. More than one replica (or an autoscaler) therefore needs Redis. The
 * same rule reaches the chart as `sharedLimitsJsonSchema` (charts/values-schema.ts puts it in
 * values.schema.json); test/provisioning-chart.test.ts and test/provisioning-pulumi.test.ts hold both to it.
 */
export const sharedLimitsMessage =
  "more than one gateway replica needs redis.enabled=true: without Redis each replica keeps its own counters " +
  "and every per-key limit is multiplied by the replica count. Turn Redis on, or set gateway.replicas=1 " +
  "(and leave gateway.autoscaling.enabled=false).";

const limitsCanMultiply = (s: z.output<typeof settingsFields>) =>
  !s.redis.enabled && (s.gateway.replicas > 1 || s.gateway.autoscaling.enabled);

/**
 * The rule in JSON Schema (draft-7): more than one gateway replica, or the autoscaler, needs Redis. Helm
 * then says "at '/redis/enabled': value must be true"; the $comment says why, for whoever opens the schema.
 */
export const sharedLimitsJsonSchema = {
  $comment: sharedLimitsMessage,
  if: {
    required: ["gateway"],
    properties: {
      gateway: {
        anyOf: [
          { required: ["replicas"], properties: { replicas: { minimum: 2 } } },
          {
            required: ["autoscaling"],
            properties: { autoscaling: { required: ["enabled"], properties: { enabled: { const: true } } } },
          },
        ],
      },
    },
  },
  // biome-ignore lint/suspicious/noThenProperty: JSON Schema's if/then keyword; this object is never awaited.
  then: {
    required: ["redis"],
    properties: { redis: { required: ["enabled"], properties: { enabled: { const: true } } } },
  },
};

export const settingsSchema = settingsFields.superRefine((s, ctx) => {
  if (limitsCanMultiply(s)) ctx.addIssue({ code: "custom", path: ["redis", "enabled"], message: sharedLimitsMessage });
});

export type PomonaSettings = z.output<typeof settingsSchema>;
export type PomonaSettingsInput = z.input<typeof settingsSchema>;

/** The top-level keys, each one Pulumi config key of the `pomona` namespace. */
export const settingKeys = Object.keys(settingsFields.shape) as (keyof PomonaSettings)[];

export function parseSettings(input: PomonaSettingsInput = {}): PomonaSettings {
  return settingsSchema.parse(input);
}
