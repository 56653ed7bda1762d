/**
 * Manifests a user might write by mistake, each with the words the API server
 * must answer with. The same inputs must be refused by the zod schemas; where
 * the refusal comes from a CEL rule, zod must give the same message.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";

type Manifest = Record<string, unknown> & { spec: Record<string, unknown>; metadata: Record<string, unknown> };

const example = (file: string): Manifest =>
  parse(readFileSync(join(import.meta.dirname, "..", "examples", file), "utf8"));

const model = (spec: Record<string, unknown>, name = "bad-model"): Manifest => {
  const m = example("model.yaml");
  return { ...m, metadata: { name }, spec: { ...m.spec, ...spec } };
};
const key = (spec: Record<string, unknown>): Manifest => {
  const m = example("api-key.yaml");
  return { ...m, metadata: { name: "bad-key" }, spec: { ...m.spec, ...spec } };
};
const policy = (spec: Record<string, unknown>): Manifest => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "RateLimitPolicy",
  metadata: { name: "bad-policy" },
  spec,
});
const replica = (spec: Record<string, unknown>): Manifest => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "ModelReplica",
  metadata: { name: "bad-replica" },
  spec: {
    model: "m",
    nodeName: "n",
    source: { path: "/models/m.gguf" },
    engine: { contextSize: 512, parallelSequences: 2 },
    memoryBytes: 0,
    templateHash: "abc",
    ...spec,
  },
});

export interface InvalidCase {
  name: string;
  manifest: Manifest;
  /** Text the API server's refusal must contain. */
  apiServerSays: string;
  /** True when a CEL rule refuses it: zod must then say the same words. */
  cel?: true;
}

export const invalidManifests: InvalidCase[] = [
  {
    name: "no model source",
    manifest: model({ source: {} }),
    apiServerSays: "exactly one of hf, url or path must be set",
    cel: true,
  },
  {
    name: "two model sources",
    manifest: model({ source: { hf: "hf:a/b:Q4_K_M", url: "https://example.com/m.gguf" } }),
    apiServerSays: "exactly one of hf, url or path must be set",
    cel: true,
  },
  {
    name: "plain http url",
    manifest: model({ source: { url: "http://example.com/m.gguf" } }),
    apiServerSays: "spec.source.url",
  },
  {
    name: "malformed hf reference",
    manifest: model({ source: { hf: "hf:only-owner" } }),
    apiServerSays: "spec.source.hf",
  },
  { name: "relative path", manifest: model({ source: { path: "models/m.gguf" } }), apiServerSays: "spec.source.path" },
  {
    name: "short sha256",
    manifest: model({ source: { url: "https://example.com/m.gguf", sha256: "abc" } }),
    apiServerSays: "spec.source.sha256",
  },
  { name: "negative replicas", manifest: model({ replicas: -1 }), apiServerSays: "spec.replicas" },
  { name: "too many replicas", manifest: model({ replicas: 101 }), apiServerSays: "spec.replicas" },
  { name: "replicas as a word", manifest: model({ replicas: "two" }), apiServerSays: "spec.replicas" },
  { name: "tiny context", manifest: model({ engine: { contextSize: 32 } }), apiServerSays: "spec.engine.contextSize" },
  {
    name: "context too small for its sequences",
    manifest: model({ engine: { contextSize: 64, parallelSequences: 8 } }),
    apiServerSays: "contextSize must leave at least 16 tokens for each parallel sequence",
    cel: true,
  },
  {
    name: "unknown strategy",
    manifest: model({ placement: { strategy: "Random" } }),
    apiServerSays: "spec.placement.strategy",
  },
  {
    name: "Exists toleration with a value",
    manifest: model({ placement: { tolerations: [{ key: "k", operator: "Exists", value: "v" }] } }),
    apiServerSays: "a toleration with operator Exists must not set value",
    cel: true,
  },
  {
    name: "Equal toleration without a key",
    manifest: model({ placement: { tolerations: [{ operator: "Equal", value: "v" }] } }),
    apiServerSays: "a toleration with operator Equal must set key",
    cel: true,
  },
  {
    name: "rollout that can never progress",
    manifest: model({ rollout: { maxSurge: 0, maxUnavailable: 0 } }),
    apiServerSays: "maxSurge and maxUnavailable cannot both be 0",
    cel: true,
  },
  { name: "memory that is not a quantity", manifest: model({ memory: "lots" }), apiServerSays: "spec.memory" },
  { name: "misspelt field", manifest: model({ replica: 2 }), apiServerSays: 'unknown field "spec.replica"' },
  {
    name: "fallback to itself",
    manifest: model({ fallbacks: ["bad-model"] }),
    apiServerSays: "a model cannot fall back to itself",
    cel: true,
  },
  {
    name: "fallback to its own alias",
    manifest: model({ aliases: ["small"], fallbacks: ["small"] }),
    apiServerSays: "a model cannot fall back to one of its own aliases",
    cel: true,
  },
  { name: "alias with a space", manifest: model({ aliases: ["bad name"] }), apiServerSays: "spec.aliases[0]" },
  { name: "repeated alias", manifest: model({ aliases: ["a", "a"] }), apiServerSays: "Duplicate value" },
  { name: "key without owner", manifest: key({ owner: "" }), apiServerSays: "spec.owner" },
  { name: "malformed expiry", manifest: key({ expiresAt: "tomorrow" }), apiServerSays: "spec.expiresAt" },
  {
    name: "empty model list",
    manifest: key({ models: [] }),
    apiServerSays: "models must list at least one model, or be left out to allow all",
    cel: true,
  },
  { name: "disabled as a word", manifest: key({ disabled: "yes" }), apiServerSays: "spec.disabled" },
  {
    name: "secretRef without a name",
    manifest: key({ secretRef: { key: "token" } }),
    apiServerSays: "spec.secretRef.name",
  },
  {
    name: "policy with no limit",
    manifest: policy({ scope: "PerKey" }),
    apiServerSays: "set at least one of requestsPerMinute, tokensPerMinute, tokensPerDay or concurrentRequests",
    cel: true,
  },
  {
    name: "burst without a pace",
    manifest: policy({ tokensPerMinute: 100, burst: 5 }),
    apiServerSays: "burst needs requestsPerMinute",
    cel: true,
  },
  {
    name: "minute budget above the day's",
    manifest: policy({ tokensPerMinute: 1000, tokensPerDay: 10 }),
    apiServerSays: "tokensPerMinute cannot exceed tokensPerDay",
    cel: true,
  },
  {
    name: "zero requests per minute",
    manifest: policy({ requestsPerMinute: 0 }),
    apiServerSays: "spec.requestsPerMinute",
  },
  { name: "unknown scope", manifest: policy({ requestsPerMinute: 5, scope: "Global" }), apiServerSays: "spec.scope" },
  { name: "replica without a node", manifest: replica({ nodeName: undefined }), apiServerSays: "spec.nodeName" },
  {
    name: "replica with an uppercase node",
    manifest: replica({ nodeName: "Mac_Studio" }),
    apiServerSays: "spec.nodeName",
  },
];
