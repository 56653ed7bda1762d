import { z } from "zod";
import { engineSettings, modelSource } from "./inference-model.ts";
import { conditions, objectName, withRules } from "./schema-kit.ts";

export const replicaPhases = ["Pending", "Downloading", "Loading", "Ready", "Failed", "Terminating"] as const;
export type ReplicaPhase = (typeof replicaPhases)[number];

export const modelReplicaSpec = withRules(
  z.strictObject({
    model: objectName("Name of the InferenceModel this replica belongs to."),
    nodeName: objectName("The inference node the operator bound this replica to; it never moves."),
    source: modelSource,
    engine: engineSettings,
    memoryBytes: z
      .int()
      .min(0)
      .describe("Model memory reserved for this replica on its node, in bytes; 0 when unknown."),
    templateHash: z
      .string()
      .max(64)
      .describe("Hash of the model spec this replica was made from; a different hash means it is outdated."),
  }),
  "The desired state of a ModelReplica, written by the operator.",
  [
    {
      rule: "self.nodeName == oldSelf.nodeName",
      message: "nodeName is immutable: a replica never moves, the operator makes a new one",
      check: () => true,
      transition: true,
    },
  ],
);

export const modelReplicaStatus = z
  .object({
    phase: z.enum(replicaPhases).optional().describe("Where the replica is in its life."),
    reason: z.string().max(128).optional().describe("A CamelCase word for why the replica is in this phase."),
    message: z.string().max(4096).optional().describe("What happened, in a sentence a user can act on."),
    endpoint: z.string().max(512).optional().describe("Base URL of the node-agent that serves this replica."),
    progress: z
      .object({
        bytesDone: z.int().min(0).describe("Bytes of the file in the node's cache."),
        bytesTotal: z.int().min(0).optional().describe("Size of the file, when known."),
      })
      .optional()
      .describe("Download progress of the model file."),
    memoryBytes: z.int().min(0).optional().describe("Memory the loaded model really uses, in bytes."),
    tokensPerSecond: z.number().min(0).optional().describe("Generation speed measured at warm-up, for one sequence."),
    threads: z
      .int()
      .min(1)
      .optional()
      .describe(
        "CPU threads the replica decodes with: spec.engine.threads when set, else the fastest count measured when it loaded.",
      ),
    observedGeneration: z.int().min(0).optional().describe("The .metadata.generation this status describes."),
    conditions,
  })
  .describe("The observed state of a ModelReplica, written by its node-agent.");

export type ModelReplicaSpec = z.infer<typeof modelReplicaSpec>;
export type ModelReplicaStatus = z.infer<typeof modelReplicaStatus>;
