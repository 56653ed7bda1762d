/** The gateway's settings, parsed once at start from the environment (docs/components.md). */
import { readFileSync } from "node:fs";
import { z } from "zod";
import { defaultSystemNamespace } from "../crds/api/index.ts";
import { defaultAnswerLimitBytes } from "./answer-limit.ts";
import { type ClientLimits, parseTrustedProxies } from "./client-connections.ts";
import { parseCorsOrigins } from "./cors.ts";

const port = z.coerce.number().int().min(0).max(65_535);
const positiveInt = z.coerce.number().int().positive();

const environment = z.object({
  POMONA_NAMESPACE: z.string().min(1).default(defaultSystemNamespace),
  POMONA_GATEWAY_PORT: port.default(8080),
  POMONA_GATEWAY_HOST: z.string().min(1).default("0.0.0.0"),
  POMONA_GATEWAY_ADMIN_PORT: port.default(9090),
  POMONA_GATEWAY_ADMIN_HOST: z.string().min(1).default("0.0.0.0"),
  POMONA_GATEWAY_HEADERS_TIMEOUT_MS: positiveInt.default(10_000),
  POMONA_GATEWAY_REQUEST_TIMEOUT_MS: positiveInt.default(30_000),
  POMONA_GATEWAY_KEEP_ALIVE_TIMEOUT_MS: positiveInt.default(5_000),
  POMONA_GATEWAY_MAX_CONNECTIONS_PER_CLIENT: positiveInt.default(256),
  POMONA_GATEWAY_TRUSTED_PROXIES: z.string().default(""),
  POMONA_GATEWAY_CORS_ORIGINS: z.string().default(""),
  POMONA_GATEWAY_ANSWER_LIMIT_BYTES: positiveInt.default(defaultAnswerLimitBytes),
  POMONA_NODE_TOKEN: z.string().min(1).optional(),
  POMONA_NODE_TOKEN_FILE: z.string().min(1).optional(),
  POMONA_REDIS_URL: z.url().optional(),
  POMONA_LIMITS_ON_REDIS_FAILURE: z.enum(["allow", "deny"]).default("allow"),
  POMONA_GATEWAY_BODY_LIMIT_BYTES: positiveInt.default(4 * 1024 * 1024),
  POMONA_UPSTREAM_FIRST_BYTE_TIMEOUT_MS: positiveInt.default(30_000),
  POMONA_UPSTREAM_TOTAL_TIMEOUT_MS: positiveInt.default(600_000),
  POMONA_BREAKER_RESET_MS: positiveInt.default(5_000),
  POMONA_QUEUE_TIMEOUT_MS: z.coerce.number().int().min(0).default(5_000),
  POMONA_QUEUE_MAX_PER_MODEL: z.coerce.number().int().min(0).default(256),
  POMONA_INVALID_KEY_BURST: positiveInt.default(20),
  POMONA_INVALID_KEY_REFILL_PER_MINUTE: positiveInt.default(20),
  POMONA_INVALID_KEY_MAX_ADDRESSES: positiveInt.default(10_000),

  POMONA_NODE_TLS: z.enum(["mutual", "off"]).default("mutual"),
  POMONA_LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

/** The per-model waiting line (gateway/upstream/waiting-line.ts). */
export interface QueueSettings {
  /** Longest a request waits for an endpoint with room; with 0 it gets 503 at once. */
  timeoutMs: number;
  /** Most requests waiting per model; with 0 a request that finds no room gets 429 at once. */
  maxPerModel: number;
}

export interface GatewaySettings {
  namespace: string;
  port: number;
  host: string;
  /** The internal listener for /metrics, /healthz and /readyz, never exposed to clients. */
  admin: { port: number; host: string };
  /** Slow-client defences of the public listener. */
  clients: ClientLimits;
  /** Largest non-streamed answer read from a node. */
  answerLimitBytes: number;
  /** Origins whose pages may call the /v1 routes from a browser (gateway/cors.ts); empty turns CORS off. */
  corsOrigins: string[];
  nodeToken: string;
  redisUrl: string | undefined;
  limitsOnRedisFailure: "allow" | "deny";
  bodyLimitBytes: number;
  upstream: { firstByteTimeoutMs: number; totalTimeoutMs: number; breakerResetMs: number };
  queue: QueueSettings;
  /** Invalid keys an address may send (burst, then refillPerMinute) before it is answered 429; addresses tracked at most. */
  invalidKeys: { burst: number; refillPerMinute: number; maxAddresses: number };

  /** mutual: TLS to nodes with the operator-minted client certificate; off: plain HTTP (node-agents run with TLS off). */
  nodeTls: "mutual" | "off";
  logLevel: string;
}

/** Parse the environment; a bad value throws an error naming the variable (never its value). */
export function loadSettings(env: NodeJS.ProcessEnv = process.env): GatewaySettings {
  const parsed = environment.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid gateway configuration: ${problems}`);
  }
  const e = parsed.data;
  let trustedProxies: string[];
  try {
    trustedProxies = parseTrustedProxies(e.POMONA_GATEWAY_TRUSTED_PROXIES);
  } catch (err) {
    throw new Error(`invalid gateway configuration: POMONA_GATEWAY_TRUSTED_PROXIES: ${(err as Error).message}`);
  }
  let corsOrigins: string[];
  try {
    corsOrigins = parseCorsOrigins(e.POMONA_GATEWAY_CORS_ORIGINS);
  } catch (err) {
    throw new Error(`invalid gateway configuration: POMONA_GATEWAY_CORS_ORIGINS: ${(err as Error).message}`);
  }
  const nodeToken = e.POMONA_NODE_TOKEN ?? (e.POMONA_NODE_TOKEN_FILE ? readToken(e.POMONA_NODE_TOKEN_FILE) : undefined);
  if (!nodeToken)
    throw new Error("invalid gateway configuration: POMONA_NODE_TOKEN or POMONA_NODE_TOKEN_FILE is required");
  return {
    namespace: e.POMONA_NAMESPACE,
    port: e.POMONA_GATEWAY_PORT,
    host: e.POMONA_GATEWAY_HOST,
    admin: { port: e.POMONA_GATEWAY_ADMIN_PORT, host: e.POMONA_GATEWAY_ADMIN_HOST },
    clients: {
      headersTimeoutMs: e.POMONA_GATEWAY_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: e.POMONA_GATEWAY_REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: e.POMONA_GATEWAY_KEEP_ALIVE_TIMEOUT_MS,
      maxConnectionsPerClient: e.POMONA_GATEWAY_MAX_CONNECTIONS_PER_CLIENT,
      trustedProxies,
    },
    answerLimitBytes: e.POMONA_GATEWAY_ANSWER_LIMIT_BYTES,
    corsOrigins,
    nodeToken,
    redisUrl: e.POMONA_REDIS_URL,
    limitsOnRedisFailure: e.POMONA_LIMITS_ON_REDIS_FAILURE,
    bodyLimitBytes: e.POMONA_GATEWAY_BODY_LIMIT_BYTES,
    upstream: {
      firstByteTimeoutMs: e.POMONA_UPSTREAM_FIRST_BYTE_TIMEOUT_MS,
      totalTimeoutMs: e.POMONA_UPSTREAM_TOTAL_TIMEOUT_MS,
      breakerResetMs: e.POMONA_BREAKER_RESET_MS,
    },
    queue: { timeoutMs: e.POMONA_QUEUE_TIMEOUT_MS, maxPerModel: e.POMONA_QUEUE_MAX_PER_MODEL },
    invalidKeys: {
      burst: e.POMONA_INVALID_KEY_BURST,
      refillPerMinute: e.POMONA_INVALID_KEY_REFILL_PER_MINUTE,
      maxAddresses: e.POMONA_INVALID_KEY_MAX_ADDRESSES,
    },

    nodeTls: e.POMONA_NODE_TLS,
    logLevel: e.POMONA_LOG_LEVEL,
  };
}

function readToken(path: string): string {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    throw new Error("invalid gateway configuration: POMONA_NODE_TOKEN_FILE cannot be read");
  }
}
