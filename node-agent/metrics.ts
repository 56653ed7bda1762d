/**
 * The node-agent's Prometheus metrics, per replica (labels namespace, replica, model). Queue depth and
 * running requests are read from the replicas' sequence pools at scrape time, so they are never stale.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export interface ReplicaGauges {
  namespace: string;
  replica: string;
  model: string;
  queued: number;
  running: number;
  maxRunning: number;
  sequences: number;
}

const labelNames = ["namespace", "replica", "model"] as const;

export function createMetrics(replicas: () => ReplicaGauges[]) {
  const registry = new Registry();
  const perReplica = (
    name: string,
    help: string,
    value: (r: ReplicaGauges) => number,
  ): Gauge<(typeof labelNames)[number]> =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        for (const r of replicas()) this.set({ namespace: r.namespace, replica: r.replica, model: r.model }, value(r));
      },
    });
  return {
    registry,
    tokensGenerated: new Counter({
      name: "pomona_node_generated_tokens_total",
      help: "Completion tokens generated.",
      labelNames,
      registers: [registry],
    }),
    promptTokens: new Counter({
      name: "pomona_node_prompt_tokens_total",
      help: "Prompt tokens evaluated.",
      labelNames,
      registers: [registry],
    }),
    requests: new Counter({
      name: "pomona_node_requests_total",
      help: "Inference requests by endpoint and outcome (ok, aborted, stalled, rejected, error).",
      labelNames: [...labelNames, "endpoint", "outcome"],
      registers: [registry],
    }),
    timeToFirstToken: new Histogram({
      name: "pomona_node_time_to_first_token_seconds",
      help: "Time from a request's start (queueing included) to its first generated token.",
      labelNames,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    tokensPerSecond: new Histogram({
      name: "pomona_node_request_tokens_per_second",
      help: "Generation speed of each request, completion tokens over generation time.",
      labelNames,
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000],
      registers: [registry],
    }),
    connectionsOpened: new Counter({
      name: "pomona_node_connections_opened_total",
      help: "Connections accepted. The gateway keeps its connections open, cancels included, so a steady rise means connection churn.",
      registers: [registry],
    }),
    pausedStreams: new Gauge({
      name: "pomona_node_paused_streams",
      help: "Streams whose generation waits for the client to read (its socket buffer is full).",
      labelNames,
      registers: [registry],
    }),
    loadSeconds: new Gauge({
      name: "pomona_node_model_load_seconds",
      help: "Seconds the replica took to load and warm up.",
      labelNames,
      registers: [registry],
    }),
    modelMemory: new Gauge({
      name: "pomona_node_model_memory_bytes",
      help: "Model memory the replica was estimated to use when it was admitted.",
      labelNames,
      registers: [registry],
    }),
    warmupTokensPerSecond: new Gauge({
      name: "pomona_node_warmup_tokens_per_second",
      help: "Single-sequence generation speed measured at warm-up.",
      labelNames,
      registers: [registry],
    }),
    queueDepth: perReplica("pomona_node_queue_depth", "Requests waiting for a free sequence.", (r) => r.queued),
    running: perReplica("pomona_node_running_requests", "Requests holding a sequence now.", (r) => r.running),
    maxRunning: perReplica(
      "pomona_node_max_concurrent_sequences",
      "Most sequences of the replica's one context in use at once since it loaded.",
      (r) => r.maxRunning,
    ),
    sequences: perReplica("pomona_node_sequences", "Parallel sequences of the replica's context.", (r) => r.sequences),
  };
}

export type NodeAgentMetrics = ReturnType<typeof createMetrics>;
