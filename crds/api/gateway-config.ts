/**
 * The gateway config: everything a gateway needs to serve, compiled by the
 * operator from InferenceModels, ModelReplicas, ApiKeys and RateLimitPolicies.
 * Names are resolved per namespace: a key sees the models of its own namespace.
 */
import { z } from "zod";

export const gatewayEndpoint = z.object({
  url: z.string().describe("Base URL of one ready replica; the gateway appends /v1/…"),
  replica: z.string(),
  node: z.string(),
  weight: z.number().positive().describe("Relative share of traffic, e.g. by measured tokens/s."),
  slots: z
    .int()
    .positive()
    .describe(
      "Requests the replica decodes at once (its parallel sequences): a gateway sends it at most this many at a time; more wait in the gateway's per-model line.",
    ),
});

export const gatewayModel = z.object({
  namespace: z.string(),
  name: z.string().describe("The InferenceModel's name, which the gateway reports as the answering model."),
  aliases: z.array(z.string()),
  endpoints: z.array(gatewayEndpoint).describe("Ready replicas; empty when none can serve."),
  fallbacks: z
    .array(z.string())
    .describe("Model names in the same namespace to try, in order, when no endpoint serves."),
  rateLimitPolicy: z.string().optional().describe("Name of a policy in the same namespace."),
  embeddings: z.boolean().describe("Whether the model serves /v1/embeddings (its engine's embeddings setting)."),
  contextSize: z.int().positive().describe("Tokens of context shared by all parallel sequences of one replica."),
  sequenceContextSize: z
    .int()
    .positive()
    .describe(
      "Tokens one request may hold, prompt and completion together: contextSize / parallelSequences, the size the node-agent gives each sequence.",
    ),
});

export const gatewayKey = z.object({
  hash: z
    .string()
    .regex(/^[a-f0-9]{64}$/)
    .describe("HMAC-SHA256 of the key under the current or previous hashing key (crds/api/key-hashing.ts), hex."),
  namespace: z.string(),
  name: z.string().describe("The ApiKey's name."),
  owner: z.string(),
  models: z.array(z.string()).optional().describe("Allowed model names or aliases; unset allows all of the namespace."),
  rateLimitPolicy: z.string().optional(),
  expiresAt: z.iso.datetime({ offset: true }).optional(),
});

export const gatewayPolicy = z.object({
  namespace: z.string(),
  name: z.string(),
  requestsPerMinute: z.int().positive().optional(),
  tokensPerMinute: z.int().positive().optional(),
  tokensPerDay: z.int().positive().optional(),
  concurrentRequests: z.int().positive().optional(),
  burst: z.int().positive().optional(),
  scope: z.enum(["PerKey", "PerModel", "PerKeyAndModel"]),
  priorityClass: z
    .enum(["interactive", "batch"])
    .optional()
    .describe("Where the requests of keys naming this policy stand in a model's waiting line; unset is interactive."),
});

export const gatewayConfig = z.object({
  /** Increases with every publication; a gateway never goes back to a lower one. */
  version: z.int().min(1),
  generatedAt: z.iso.datetime({ offset: true }),
  models: z.array(gatewayModel),
  keys: z.array(gatewayKey),
  policies: z.array(gatewayPolicy),
});

export type GatewayEndpoint = z.infer<typeof gatewayEndpoint>;
export type GatewayModel = z.infer<typeof gatewayModel>;
export type GatewayKey = z.infer<typeof gatewayKey>;
export type GatewayPolicy = z.infer<typeof gatewayPolicy>;
export type GatewayConfig = z.infer<typeof gatewayConfig>;
