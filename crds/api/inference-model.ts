import { z } from "zod";
import { conditions, modelName, objectName, quantity, setOf, withRules } from "./schema-kit.ts";

const sha256 = z
  .string()
  .regex(/^[a-f0-9]{64}$/, "must be 64 lowercase hex digits")
  .describe("Expected sha256 of the file, 64 lowercase hex digits; a mismatch fails the replica.");

export const modelSource = withRules(
  z.strictObject({
    hf: z
      .string()
      .max(512)
      .regex(
        /^hf:[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+|\/[A-Za-z0-9_./-]+\.gguf)?$/,
        "must look like hf:owner/repo:quant or hf:owner/repo/file.gguf",
      )
      .optional()
      .describe("A Hugging Face reference: hf:owner/repo:quant or hf:owner/repo/path/file.gguf."),
    url: z
      .string()
      .max(2048)
      .regex(/^https:\/\/[^\s]+$/, "must be an https:// URL")
      .optional()
      .describe("An https URL of a GGUF file."),
    path: z
      .string()
      .max(1024)
      .regex(/^\/[^\0]*$/, "must be an absolute path")
      .optional()
      .describe("An absolute path of a GGUF file already present on the node."),
    sha256: sha256.optional(),
  }),
  "Where the GGUF file comes from: exactly one of hf, url or path.",
  [
    {
      rule: "[has(self.hf), has(self.url), has(self.path)].filter(x, x).size() == 1",
      message: "exactly one of hf, url or path must be set",
      check: (s) => [s.hf, s.url, s.path].filter((x) => x !== undefined).length === 1,
    },
  ],
);

export const engineSettings = withRules(
  z.strictObject({
    contextSize: z
      .int()
      .min(64)
      .max(1048576)
      .default(4096)
      .describe("Tokens of context shared by all parallel sequences of one replica."),
    parallelSequences: z
      .int()
      .min(1)
      .max(64)
      .default(4)
      .describe("Requests one replica decodes together in one context (continuous batching)."),
    gpuLayers: z
      .int()
      .min(0)
      .max(1024)
      .optional()
      .describe("Layers to offload to the GPU; unset offloads as many as fit. Ignored on CPU nodes."),
    batchSize: z
      .int()
      .min(1)
      .max(65536)
      .optional()
      .describe("Tokens evaluated per forward pass; unset lets the engine choose."),
    threads: z
      .int()
      .min(1)
      .max(512)
      .optional()
      .describe(
        "CPU threads for generation; unset: the node-agent measures counts up to the CPUs it may use when the replica loads and keeps the fastest.",
      ),
    embeddings: z.boolean().default(true).describe("Also serve /v1/embeddings from this model."),
  }),
  "How a replica runs the model.",
  [
    {
      rule: "self.contextSize >= self.parallelSequences * 16",
      message: "contextSize must leave at least 16 tokens for each parallel sequence",
      check: (e) => e.contextSize >= e.parallelSequences * 16,
    },
  ],
);

export const toleration = withRules(
  z.strictObject({
    key: z.string().max(316).optional().describe("Taint key the toleration matches; empty with Exists matches all."),
    operator: z
      .enum(["Equal", "Exists"])
      .default("Equal")
      .describe("Equal matches key and value; Exists matches any value of the key."),
    value: z.string().max(63).optional().describe("Taint value the toleration matches when the operator is Equal."),
    effect: z
      .enum(["NoSchedule", "PreferNoSchedule", "NoExecute"])
      .optional()
      .describe("Taint effect to match; empty matches all effects."),
  }),
  "A taint that replicas of this model tolerate.",
  [
    {
      rule: "self.operator != 'Exists' || !has(self.value)",
      message: "a toleration with operator Exists must not set value",
      check: (t) => t.operator !== "Exists" || t.value === undefined,
    },
    {
      rule: "self.operator != 'Equal' || has(self.key)",
      message: "a toleration with operator Equal must set key",
      check: (t) => t.operator !== "Equal" || t.key !== undefined,
    },
  ],
);

export const placement = z
  .strictObject({
    nodeSelector: z
      .record(z.string().max(316), z.string().max(63))
      .optional()
      .describe("Labels a node must carry to receive a replica, e.g. pomona.dev/accelerator: metal."),
    tolerations: z.array(toleration).max(16).optional().describe("Taints replicas tolerate."),
    strategy: z
      .enum(["Spread", "BinPack"])
      .default("Spread")
      .describe("Spread puts replicas on the emptiest nodes; BinPack fills the fullest node that fits first."),
  })
  .describe("Which inference nodes may hold replicas, and how to choose among them.");

export const rollout = withRules(
  z.strictObject({
    maxSurge: z
      .int()
      .min(0)
      .max(100)
      .default(1)
      .describe("Extra replicas allowed above the desired count during a rollout."),
    maxUnavailable: z
      .int()
      .min(0)
      .max(100)
      .default(0)
      .describe("Ready replicas a rollout may take away below the desired count."),
  }),
  "How a changed spec replaces running replicas.",
  [
    {
      rule: "self.maxSurge + self.maxUnavailable > 0",
      message: "maxSurge and maxUnavailable cannot both be 0",
      check: (r) => r.maxSurge + r.maxUnavailable > 0,
    },
  ],
);

export const inferenceModelSpec = withRules(
  z.strictObject({
    source: modelSource,
    aliases: setOf(
      modelName("Another name clients may use for this model."),
      16,
      "Names clients may use besides the object's name, e.g. gpt-4o-mini.",
    ).optional(),
    engine: engineSettings.default({ contextSize: 4096, parallelSequences: 4, embeddings: true }),
    replicas: z.int().min(0).max(100).default(1).describe("How many copies of the model to serve."),
    placement: placement.default({ strategy: "Spread" }),
    rollout: rollout.default({ maxSurge: 1, maxUnavailable: 0 }),
    memory: quantity(
      "Model memory one replica needs (weights, KV cache, overhead); unset estimates it from the GGUF header.",
    ).optional(),
    fallbacks: setOf(
      modelName("Name of a model to answer when this one cannot."),
      8,
      "Models the gateway tries, in order, when no replica of this one can serve.",
    ).optional(),
    rateLimitPolicy: objectName(
      "A RateLimitPolicy in this namespace applied to every request to this model.",
    ).optional(),
  }),
  "The desired state of an InferenceModel.",
  [
    {
      rule: "!has(self.aliases) || !has(self.fallbacks) || self.aliases.all(a, !(a in self.fallbacks))",
      message: "a model cannot fall back to one of its own aliases",
      check: (s) => !s.aliases || !s.fallbacks || s.aliases.every((a) => !s.fallbacks?.includes(a)),
    },
  ],
);

export const modelEndpoint = z
  .object({
    replica: z.string().describe("Name of the ModelReplica behind this endpoint."),
    node: z.string().describe("Node that serves it."),
    url: z.string().describe("Base URL of the node-agent that serves it."),
  })
  .describe("A ready replica the gateway may route to.");

export const inferenceModelStatus = z
  .object({
    observedGeneration: z.int().min(0).optional().describe("The .metadata.generation this status describes."),
    replicas: z.int().min(0).optional().describe("Replicas that exist, in any phase."),
    readyReplicas: z.int().min(0).optional().describe("Replicas that are Ready to serve."),
    updatedReplicas: z.int().min(0).optional().describe("Replicas that run the current spec."),
    memoryBytes: z.int().min(0).optional().describe("Model memory reserved for each replica, in bytes."),
    endpoints: z.array(modelEndpoint).max(100).optional().describe("Ready replicas and where to reach them."),
    conditions,
  })
  .describe("The observed state of an InferenceModel, written by the operator.");

export type InferenceModelSpec = z.infer<typeof inferenceModelSpec>;
export type InferenceModelStatus = z.infer<typeof inferenceModelStatus>;
export type ModelSource = z.infer<typeof modelSource>;
export type EngineSettings = z.infer<typeof engineSettings>;
export type Toleration = z.infer<typeof toleration>;

/**
 * Tokens one request may hold, prompt and completion together. The spec's contextSize is shared by all
 * parallel sequences; node-llama-cpp sizes each sequence, so the node-agent loads this much per sequence and
 * the gateway reports it in /v1/models.
 */
export function perSequenceContext(engine: Pick<EngineSettings, "contextSize" | "parallelSequences">): number {
  return Math.floor(engine.contextSize / engine.parallelSequences);
}
