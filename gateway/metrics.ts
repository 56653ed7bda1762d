/** The gateway's Prometheus metrics, one registry per app so several apps can live in one process (tests). */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export type GatewayMetrics = ReturnType<typeof createMetrics>;

export function createMetrics() {
  const registry = new Registry();
  const registers = [registry];
  return {
    registry,
    requests: new Counter({
      name: "pomona_gateway_requests_total",
      help: "Requests answered, by API route, model (as answered), key owner and HTTP status.",
      labelNames: ["route", "model", "owner", "status"] as const,
      registers,
    }),
    duration: new Histogram({
      name: "pomona_gateway_request_duration_seconds",
      help: "Time from request to the last byte of the answer.",
      labelNames: ["route", "model"] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    }),
    timeToFirstToken: new Histogram({
      name: "pomona_gateway_time_to_first_token_seconds",
      help: "Time from request to the first byte of the upstream answer.",
      labelNames: ["model"] as const,
      buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    tokens: new Counter({
      name: "pomona_gateway_tokens_total",
      help: "Tokens reported by the node-agents, by direction (prompt or completion).",
      labelNames: ["model", "owner", "direction"] as const,
      registers,
    }),
    breakerState: new Gauge({
      name: "pomona_gateway_breaker_state",
      help: "Circuit breaker per endpoint (a replica on a node): 0 closed, 1 open, 2 half-open.",
      labelNames: ["model", "replica", "node"] as const,
      registers,
    }),
    upstreamAttempts: new Counter({
      name: "pomona_gateway_upstream_attempts_total",
      help: "Calls to node-agents by outcome (ok, busy, failed, rejected_by_breaker).",
      labelNames: ["model", "outcome"] as const,
      registers,
    }),
    fallbacks: new Counter({
      name: "pomona_gateway_fallbacks_total",
      help: "Requests answered by a fallback model because the requested one could not serve.",
      labelNames: ["model", "fallback"] as const,
      registers,
    }),
    limitRejections: new Counter({
      name: "pomona_gateway_limit_rejections_total",
      help: "Requests refused by a rate limit, by limit type and policy scope.",
      labelNames: ["limit", "scope"] as const,
      registers,
    }),
    limiterFailures: new Counter({
      name: "pomona_gateway_limiter_failures_total",
      help: "Admissions the shared limiter (Redis) could not decide, handled by the failure mode.",
      labelNames: ["mode"] as const,
      registers,
    }),
    limiterFailureMode: new Gauge({
      name: "pomona_gateway_limits_on_redis_failure",
      help: "What the gateway does when Redis cannot be reached: 1 for the mode in effect (allow or deny).",
      labelNames: ["mode"] as const,
      registers,
    }),
    configVersion: new Gauge({
      name: "pomona_gateway_config_version",
      help: "Version of the gateway config in use (milliseconds since 1970 at publication, or more); 0 before the first one.",
      registers,
    }),
    configRejected: new Counter({
      name: "pomona_gateway_config_rejected_total",
      help: "Published configs refused as invalid; the last good one stays in use.",
      registers,
    }),
    configBucketReads: new Counter({
      name: "pomona_gateway_config_bucket_reads_total",
      help: "Key bucket Secrets read from the API server; unchanged buckets are served from the cache.",
      registers,
    }),
    queueLength: new Gauge({
      name: "pomona_gateway_queue_length",
      help: "Requests waiting in the gateway's line of a model (namespace/name) for an endpoint with room.",
      labelNames: ["model"] as const,
      registers,
    }),
    queueWait: new Histogram({
      name: "pomona_gateway_queue_wait_seconds",
      help: "Time requests spent in a model's waiting line, by priority class and how the wait ended (served, full, deadline, gone, closed).",
      labelNames: ["model", "priority", "outcome"] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    }),
    authFailures: new Counter({
      name: "pomona_gateway_auth_failures_total",
      help: "Requests refused for their API key, by reason (missing, invalid, expired); never the key or the address.",
      labelNames: ["reason"] as const,
      registers,
    }),
    authThrottled: new Counter({
      name: "pomona_gateway_auth_throttled_total",
      help: "Requests answered 429 because their address sent too many invalid API keys.",
      registers,
    }),
    authThrottledAddresses: new Counter({
      name: "pomona_gateway_auth_throttled_addresses_total",
      help: "Times an address was throttled after repeated invalid API keys (the address is in the log line).",
      registers,
    }),
    configBucketsApplied: new Counter({
      name: "pomona_gateway_config_buckets_applied_total",
      help: "Key buckets decoded and rebuilt into the route table; a one-key change rebuilds one, a start all of them.",
      registers,
    }),
    connectionsRefused: new Counter({
      name: "pomona_gateway_connections_refused_total",
      help: "Client connections answered 429 and closed because their address held too many open connections.",
      registers,
    }),
    inFlight: new Gauge({
      name: "pomona_gateway_requests_in_flight",
      help: "Inference requests being served.",
      registers,
    }),
  };
}
