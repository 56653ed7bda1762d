import { Counter, Gauge, Histogram, Registry } from "prom-client";

export function createMetrics() {
  const registry = new Registry();
  return {
    registry,
    reconciles: new Counter({
      name: "pomona_operator_reconciles_total",
      help: "Reconciles by controller and result (success, error, terminal).",
      labelNames: ["controller", "result"],
      registers: [registry],
    }),
    errors: new Counter({
      name: "pomona_operator_reconcile_errors_total",
      help: "Reconciles that failed.",
      labelNames: ["controller"],
      registers: [registry],
    }),
    reconcileSeconds: new Histogram({
      name: "pomona_operator_reconcile_duration_seconds",
      help: "Time one reconcile takes.",
      labelNames: ["controller"],
      buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10],
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: "pomona_operator_workqueue_depth",
      help: "Keys waiting in a controller's queue.",
      labelNames: ["controller"],
      registers: [registry],
    }),
    queueLatency: new Histogram({
      name: "pomona_operator_workqueue_latency_seconds",
      help: "Time a key waits in the queue before a worker takes it.",
      labelNames: ["controller"],
      buckets: [0.001, 0.01, 0.1, 0.5, 2, 10],
      registers: [registry],
    }),
    schedulingFailures: new Counter({
      name: "pomona_operator_scheduling_failures_total",
      help: "Replicas that could not be placed on any node.",
      registers: [registry],
    }),
    gatewayConfigPublications: new Counter({
      name: "pomona_operator_gateway_config_publications_total",
      help: "Gateway config versions published.",
      registers: [registry],
    }),
    isLeader: new Gauge({
      name: "pomona_operator_leader",
      help: "1 while this operator holds the leader Lease.",
      registers: [registry],
    }),
    cachesSynced: new Gauge({
      name: "pomona_operator_caches_synced",
      help: "1 once every informer has its first list in the cache (standbys too: they campaign only then).",
      registers: [registry],
    }),
    cacheLists: new Counter({
      name: "pomona_operator_cache_lists_total",
      help: "Complete lists made by the informers, by kind: one per informer at start, more only after 410 Gone.",
      labelNames: ["kind"],
      registers: [registry],
    }),
  };
}

export type OperatorMetrics = ReturnType<typeof createMetrics>;
