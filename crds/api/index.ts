/**
 * The Pomona API (group pomona.dev, version v1alpha1): the one source of
 * truth for the TypeScript types, the zod validation every component uses, and
 * the CRD YAML in crds/ (rendered by crds/generate.ts).
 */
import type { V1ObjectMeta } from "@kubernetes/client-node";
import { z } from "zod";
import { apiKeySpec, apiKeyStatus } from "./api-key.ts";
import { inferenceModelSpec, inferenceModelStatus } from "./inference-model.ts";
import { modelReplicaSpec, modelReplicaStatus } from "./model-replica.ts";
import { rateLimitPolicySpec, rateLimitPolicyStatus } from "./rate-limit-policy.ts";
import type { CrossFieldRule } from "./schema-kit.ts";

export * from "./api-key.ts";
export * from "./hf-reference.ts";
export * from "./inference-model.ts";
export * from "./model-replica.ts";
export * from "./rate-limit-policy.ts";
export type { Condition } from "./schema-kit.ts";

export const GROUP = "pomona.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface PrinterColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  jsonPath: string;
  description: string;
  priority?: number;
}

/** What the whole object looks like to a root-level CEL rule. */
interface RootView<Spec> {
  metadata: { name?: string };
  spec: Spec;
}

export interface ResourceDefinition<Spec extends z.ZodType, Status extends z.ZodType> {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  description: string;
  spec: Spec;
  status: Status;
  printerColumns: PrinterColumn[];
  /** Paths for the scale subresource, so `kubectl scale` works on kinds that have replicas. */
  scale?: { specReplicasPath: string; statusReplicasPath: string };
  rootRules: CrossFieldRule<RootView<z.output<Spec>>>[];
}

const define = <Spec extends z.ZodType, Status extends z.ZodType>(d: ResourceDefinition<Spec, Status>) => d;

const age: PrinterColumn = {
  name: "Age",
  type: "date",
  jsonPath: ".metadata.creationTimestamp",
  description: "Time since the object was created.",
};

export const inferenceModelDefinition = define({
  kind: "InferenceModel",
  plural: "inferencemodels",
  singular: "inferencemodel",
  shortNames: ["im", "ims"],
  description:
    "A model Pomona serves: where its GGUF file comes from, the names clients use for it, how many replicas run and where.",
  spec: inferenceModelSpec,
  status: inferenceModelStatus,
  scale: { specReplicasPath: ".spec.replicas", statusReplicasPath: ".status.replicas" },
  printerColumns: [
    { name: "Ready", type: "integer", jsonPath: ".status.readyReplicas", description: "Replicas ready to serve." },
    { name: "Desired", type: "integer", jsonPath: ".spec.replicas", description: "Replicas wanted." },
    {
      name: "Status",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
      description: "Why the model is or is not ready.",
    },
    {
      name: "Memory",
      type: "string",
      jsonPath: ".spec.memory",
      description: "Model memory requested per replica.",
      priority: 1,
    },
    age,
  ],
  rootRules: [
    {
      rule: "!has(self.spec.fallbacks) || !(self.metadata.name in self.spec.fallbacks)",
      message: "a model cannot fall back to itself",
      check: (o) => !o.spec.fallbacks?.includes(o.metadata.name ?? ""),
    },
  ],
});

export const modelReplicaDefinition = define({
  kind: "ModelReplica",
  plural: "modelreplicas",
  singular: "modelreplica",
  shortNames: ["mr", "mrs"],
  description:
    "One copy of an InferenceModel bound to one inference node, the Pod of Pomona. The operator creates it; the node-agent of its node loads it and reports its status.",
  spec: modelReplicaSpec,
  status: modelReplicaStatus,
  printerColumns: [
    { name: "Model", type: "string", jsonPath: ".spec.model", description: "The InferenceModel it belongs to." },
    { name: "Node", type: "string", jsonPath: ".spec.nodeName", description: "The node that holds it." },
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Where it is in its life." },
    { name: "Endpoint", type: "string", jsonPath: ".status.endpoint", description: "Where it serves.", priority: 1 },
    { name: "Message", type: "string", jsonPath: ".status.message", description: "What happened.", priority: 1 },
    age,
  ],
  rootRules: [],
});

export const apiKeyDefinition = define({
  kind: "ApiKey",
  plural: "apikeys",
  singular: "apikey",
  shortNames: ["ak", "aks"],
  description:
    "An API key for the gateway. The operator mints the key into a Secret it owns (or adopts yours) and records only its prefix and hash.",
  spec: apiKeySpec,
  status: apiKeyStatus,
  printerColumns: [
    { name: "Owner", type: "string", jsonPath: ".spec.owner", description: "Who the key belongs to." },
    { name: "Prefix", type: "string", jsonPath: ".status.prefix", description: "The key's first characters." },
    {
      name: "Status",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
      description: "Whether the key is usable.",
    },
    { name: "Expires", type: "date", jsonPath: ".spec.expiresAt", description: "When the key expires." },
    {
      name: "Secret",
      type: "string",
      jsonPath: ".status.secretName",
      description: "Secret that holds it.",
      priority: 1,
    },
    age,
  ],
  rootRules: [],
});

export const rateLimitPolicyDefinition = define({
  kind: "RateLimitPolicy",
  plural: "ratelimitpolicies",
  singular: "ratelimitpolicy",
  shortNames: ["rlp", "rlps"],
  description:
    "Limits on requests and tokens, applied per key, per model or per key and model by ApiKeys and InferenceModels that name it.",
  spec: rateLimitPolicySpec,
  status: rateLimitPolicyStatus,
  printerColumns: [
    { name: "RPM", type: "integer", jsonPath: ".spec.requestsPerMinute", description: "Requests per minute." },
    { name: "TPM", type: "integer", jsonPath: ".spec.tokensPerMinute", description: "Tokens per minute." },
    { name: "TPD", type: "integer", jsonPath: ".spec.tokensPerDay", description: "Tokens per day.", priority: 1 },
    {
      name: "Concurrent",
      type: "integer",
      jsonPath: ".spec.concurrentRequests",
      description: "Requests in flight at once.",
    },
    { name: "Scope", type: "string", jsonPath: ".spec.scope", description: "What one budget counts." },
    { name: "Keys", type: "integer", jsonPath: ".status.keys", description: "ApiKeys that use it.", priority: 1 },
    age,
  ],
  rootRules: [],
});

export const resourceDefinitions = [
  inferenceModelDefinition,
  modelReplicaDefinition,
  apiKeyDefinition,
  rateLimitPolicyDefinition,
] as const;

/** The zod schema of a whole manifest of one kind, root rules included. */
export function manifestSchema<Spec extends z.ZodType, Status extends z.ZodType>(d: ResourceDefinition<Spec, Status>) {
  return z
    .object({
      apiVersion: z.literal(API_VERSION),
      kind: z.literal(d.kind),
      metadata: z.looseObject({ name: z.string().optional(), namespace: z.string().optional() }),
      spec: d.spec,
      status: d.status.optional(),
    })
    .superRefine((o, ctx) => {
      for (const r of d.rootRules) {
        if (!r.check(o as RootView<z.output<Spec>>)) ctx.addIssue({ code: "custom", message: r.message });
      }
    });
}

/** The manifest schema of a kind, for code that holds a manifest of any Pomona kind. */
export function manifestSchemaFor(kind: string): z.ZodType {
  const definition = resourceDefinitions.find((d) => d.kind === kind);
  if (!definition) throw new Error(`${kind} is not a Pomona kind`);
  return manifestSchema(definition as ResourceDefinition<z.ZodType, z.ZodType>);
}

/** A Pomona object as read from the API server. */
export interface Resource<Spec, Status> {
  apiVersion: typeof API_VERSION;
  kind: string;
  metadata: V1ObjectMeta;
  spec: Spec;
  status?: Status;
}

export type InferenceModel = Resource<z.output<typeof inferenceModelSpec>, z.output<typeof inferenceModelStatus>>;
export type ModelReplica = Resource<z.output<typeof modelReplicaSpec>, z.output<typeof modelReplicaStatus>>;
export type ApiKey = Resource<z.output<typeof apiKeySpec>, z.output<typeof apiKeyStatus>>;
export type RateLimitPolicy = Resource<z.output<typeof rateLimitPolicySpec>, z.output<typeof rateLimitPolicyStatus>>;

export * from "./gateway-config.ts";
export * from "./gateway-config-codec.ts";
export * from "./key-hashing.ts";
export * from "./well-known.ts";
