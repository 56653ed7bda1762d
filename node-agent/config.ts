/** The node-agent's settings, parsed once at start from the environment (docs/components.md). */
import { readFileSync } from "node:fs";
import { homedir, hostname, platform } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { defaultHfEndpoint } from "../crds/api/index.ts";
import { parseQuantity } from "../crds/api/quantity.ts";

/** Keep-alive bytes of an admitted request, every this many milliseconds (node-contract.md). */
export const defaultKeepAliveMs = 10_000;
/** A stream whose reader takes nothing for this long is cancelled and its sequence freed. */
export const defaultStallTimeoutMs = 30_000;

const port = z.coerce.number().int().min(0).max(65_535);
const quantityText = z.string().refine((v) => parseQuantity(v) !== undefined, "must be bytes or a quantity like 8Gi");

const environment = z.object({
  POMONA_NODE_NAME: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, "must be a lowercase DNS-1123 name")
    .optional(),
  POMONA_NODE_MODE: z.enum(["virtual", "attached"]).optional(),
  POMONA_AGENT_ADDRESS: z.string().min(1).default("127.0.0.1"),
  POMONA_AGENT_PORT: port.default(8090),
  POMONA_NODE_TOKEN: z.string().min(1).optional(),
  POMONA_NODE_TOKEN_FILE: z.string().min(1).optional(),
  POMONA_CACHE_DIR: z.string().min(1).optional(),
  POMONA_CACHE_MAX_BYTES: quantityText.optional(),
  POMONA_MODEL_MEMORY: quantityText.optional(),
  POMONA_HF_ENDPOINT: z.url().default(defaultHfEndpoint),
  POMONA_THREADS: z.coerce.number().int().min(1).max(512).optional(),
  POMONA_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  POMONA_LEASE_RENEW_SECONDS: z.coerce.number().positive().default(10),
  POMONA_QUEUE_LIMIT: z.coerce.number().int().min(0).default(64),
  POMONA_KEEP_ALIVE_MS: z.coerce.number().int().min(10).default(defaultKeepAliveMs),
  POMONA_STALL_TIMEOUT_MS: z.coerce.number().int().min(10).default(defaultStallTimeoutMs),

  POMONA_NODE_TLS: z.enum(["mutual", "off"]).default("mutual"),
});

export interface NodeAgentConfig {
  nodeName: string;
  nodeMode: "virtual" | "attached";
  address: string;
  port: number;
  nodeToken: string;
  cacheDir: string;
  /** undefined: half the disk's free space at start, decided by the cache. */
  cacheMaxBytes: number | undefined;
  /** undefined: detected from the hardware. */
  modelMemoryBytes: number | undefined;
  /** The most llama.cpp threads a replica may use (counts up to it are measured at load); undefined: the CPUs this process may really use. */
  threads: number | undefined;
  logLevel: string;
  leaseRenewSeconds: number;
  /** Where hf: file references download from: the Hugging Face Hub or a mirror of it. */
  hfEndpoint: string;
  /** Requests that may wait for a free sequence, per replica, before 429 replica_busy. */
  queueLimit: number;
  /** Milliseconds between keep-alive bytes of an admitted request. */
  keepAliveMs: number;
  /** Milliseconds a stream's reader may leave its socket full before its generation is cancelled. */
  stallTimeoutMs: number;

  /**
   * mutual: serve HTTPS with a certificate the operator signs, and take inference requests only from a
   * client with the gateway's certificate (and the node token). off: plain HTTP with the node token.
   */
  tls: "mutual" | "off";
}

/** Parse the environment; a bad value throws an error naming the variable (never its value). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): NodeAgentConfig {
  const parsed = environment.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid node-agent configuration: ${problems}`);
  }
  const e = parsed.data;
  const nodeToken = e.POMONA_NODE_TOKEN ?? (e.POMONA_NODE_TOKEN_FILE ? readToken(e.POMONA_NODE_TOKEN_FILE) : undefined);
  if (!nodeToken)
    throw new Error("invalid node-agent configuration: POMONA_NODE_TOKEN or POMONA_NODE_TOKEN_FILE is required");
  return {
    nodeName: e.POMONA_NODE_NAME ?? hostname().toLowerCase().split(".")[0]!,
    nodeMode: e.POMONA_NODE_MODE ?? (platform() === "darwin" ? "virtual" : "attached"),
    address: e.POMONA_AGENT_ADDRESS,
    port: e.POMONA_AGENT_PORT,
    nodeToken,
    cacheDir: e.POMONA_CACHE_DIR ?? join(homedir(), ".cache", "pomona", "models"),
    cacheMaxBytes: e.POMONA_CACHE_MAX_BYTES ? parseQuantity(e.POMONA_CACHE_MAX_BYTES) : undefined,
    modelMemoryBytes: e.POMONA_MODEL_MEMORY ? parseQuantity(e.POMONA_MODEL_MEMORY) : undefined,
    hfEndpoint: e.POMONA_HF_ENDPOINT,
    threads: e.POMONA_THREADS,
    logLevel: e.POMONA_LOG_LEVEL,
    leaseRenewSeconds: e.POMONA_LEASE_RENEW_SECONDS,
    queueLimit: e.POMONA_QUEUE_LIMIT,
    keepAliveMs: e.POMONA_KEEP_ALIVE_MS,
    stallTimeoutMs: e.POMONA_STALL_TIMEOUT_MS,

    tls: e.POMONA_NODE_TLS,
  };
}

function readToken(path: string): string {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    throw new Error("invalid node-agent configuration: POMONA_NODE_TOKEN_FILE cannot be read");
  }
}
