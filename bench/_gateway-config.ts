/** Gateway configs for the benchmarks' static gateway (bench/_static-gateway.ts): one model, keys, policies. */
import { type GatewayConfig, type GatewayKey, type GatewayPolicy, hashingKey, keyedHash } from "../crds/api/index.ts";

export const BENCH_NODE_TOKEN = "bench-node-token";
/** The static gateway's hashing key (in production a random one the operator keeps in pomona-key-hashing). */
export const BENCH_HASHING_KEY = hashingKey(Buffer.alloc(32, "bench-hashing-key"));

export interface StaticGatewaySpec {
  config: GatewayConfig;
  nodeToken: string;
  redisUrl?: string;
  /** The gateway's client credential for mutual TLS to the node (bench/_node-tls.ts); plain HTTP without. */
  nodeTls?: { cert: string; key: string; ca: string };
}

/** A policy so generous it never refuses: the limiter still runs on every request, as in production. */
export const generousPolicy: GatewayPolicy = {
  namespace: "bench",
  name: "generous",
  scope: "PerKey",
  requestsPerMinute: 1e9,
  tokensPerMinute: 1e9,
  concurrentRequests: 1e6,
};

export function benchKey(secret: string, policy: string): GatewayKey {
  const hash = keyedHash(secret, BENCH_HASHING_KEY);
  return { hash, namespace: "bench", name: `key-${hash.slice(0, 8)}`, owner: "bench", rateLimitPolicy: policy };
}

/** One model `name` in namespace bench served by one endpoint (a node-agent replica's base URL). */
export function staticGatewaySpec(parts: {
  model: string;
  endpoint: string;
  contextSize: number;
  /** What one request may use; the whole context unless given (benchmarks do not read /v1/models). */
  sequenceContextSize?: number;
  keys: GatewayKey[];
  policies: GatewayPolicy[];
  redisUrl?: string;
  nodeTls?: StaticGatewaySpec["nodeTls"];
  /** Requests the gateway sends the endpoint at once before the rest wait in its line: a replica's sequences. */
  slots?: number;
}): StaticGatewaySpec {
  return {
    nodeToken: BENCH_NODE_TOKEN,
    redisUrl: parts.redisUrl,
    nodeTls: parts.nodeTls,
    config: {
      version: 1,
      generatedAt: new Date().toISOString(),
      models: [
        {
          namespace: "bench",
          name: parts.model,
          aliases: [],
          endpoints: [
            { url: parts.endpoint, replica: "bench-replica", node: "bench-node", weight: 1, slots: parts.slots ?? 64 },
          ],
          fallbacks: [],
          embeddings: false,
          contextSize: parts.contextSize,
          sequenceContextSize: parts.sequenceContextSize ?? parts.contextSize,
        },
      ],
      keys: parts.keys,
      policies: parts.policies,
    },
  };
}
