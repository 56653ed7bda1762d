/** The operator's configuration, parsed once from the environment (docs/components.md). */
import { hostname } from "node:os";
import { z } from "zod";
import { defaultHfEndpoint, defaultSystemNamespace } from "../crds/api/index.ts";
import type { ModelSourcePolicy } from "../model-source/guarded-fetch.ts";
import { modelSourcePolicy } from "../model-source/policy.ts";

const schema = z.object({
  POMONA_NAMESPACE: z.string().min(1).default(defaultSystemNamespace),
  POMONA_OPERATOR_ID: z.string().min(1).default(`${hostname()}-${process.pid}`),
  POMONA_OPERATOR_PORT: z.coerce.number().int().min(0).max(65535).default(8081),
  POMONA_NODE_LOST_AFTER_SECONDS: z.coerce.number().int().min(0).default(40),
  POMONA_CACHE_SYNC_TIMEOUT_SECONDS: z.coerce.number().int().min(1).default(120),
  POMONA_HF_ENDPOINT: z.url().default(defaultHfEndpoint),
  /** Comma-separated namespaces whose ApiKeys the operator serves (the system namespace always); empty: all. */
  POMONA_WATCH_NAMESPACES: z
    .string()
    .regex(/^[a-z0-9-]*(,[a-z0-9-]+)*$/, "a comma-separated list of namespace names")
    .default(""),
  POMONA_NODE_AGENT_SERVICE_ACCOUNT: z
    .string()
    .regex(/^[a-z0-9-]+\/[a-z0-9-]+$/, "must be namespace/name")
    .default(`${defaultSystemNamespace}/pomona-node-agent`),
  POMONA_NODE_CERT_LIFETIME_SECONDS: z.coerce
    .number()
    .int()
    .min(30)
    .max(90 * 86_400)
    .default(7 * 86_400),
  POMONA_MODEL_ALLOWED_HOSTS: z.string().optional(),
});

export interface OperatorConfig {
  namespace: string;
  identity: string;
  port: number;
  nodeLostAfterSeconds: number;
  /** How long a new leader waits for its caches' first lists before it exits. */
  cacheSyncTimeoutMs: number;
  /** Where hf: file references are read from to estimate a replica's memory. */
  hfEndpoint: string;
  /** Namespaces whose ApiKeys get key Secrets (the system namespace included); undefined: every namespace. */
  servedNamespaces: readonly string[] | undefined;
  /** The node-agents' ServiceAccount (namespace/name), whose certificate requests name their node. */
  nodeAgentServiceAccount: string;
  /** Lifetime of the node and gateway certificates the operator signs; renewed two thirds in. */
  nodeCertLifetimeMs: number;
  /** Where GGUF headers may be read from (model-source/). */
  modelSources: ModelSourcePolicy;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`invalid ${String(issue?.path[0])}: ${issue?.message}`);
  }
  const c = parsed.data;
  let modelSources: ModelSourcePolicy;
  try {
    modelSources = modelSourcePolicy({ allowedHosts: c.POMONA_MODEL_ALLOWED_HOSTS, hfEndpoint: c.POMONA_HF_ENDPOINT });
  } catch (err) {
    throw new Error(`invalid POMONA_MODEL_ALLOWED_HOSTS: ${(err as Error).message}`);
  }
  return {
    namespace: c.POMONA_NAMESPACE,
    identity: c.POMONA_OPERATOR_ID,
    port: c.POMONA_OPERATOR_PORT,
    nodeLostAfterSeconds: c.POMONA_NODE_LOST_AFTER_SECONDS,
    cacheSyncTimeoutMs: c.POMONA_CACHE_SYNC_TIMEOUT_SECONDS * 1000,
    hfEndpoint: c.POMONA_HF_ENDPOINT,
    servedNamespaces: c.POMONA_WATCH_NAMESPACES
      ? [...new Set([c.POMONA_NAMESPACE, ...c.POMONA_WATCH_NAMESPACES.split(",")])]
      : undefined,
    nodeAgentServiceAccount: c.POMONA_NODE_AGENT_SERVICE_ACCOUNT,
    nodeCertLifetimeMs: c.POMONA_NODE_CERT_LIFETIME_SECONDS * 1000,
    modelSources,
  };
}
