/**
 * One opossum circuit breaker per endpoint. A breaker opens when half or more
 * of the recent calls to its endpoint failed (at least VOLUME_THRESHOLD of
 * them), refuses calls while open, and after the reset time lets one probe
 * through (half-open) to decide whether to close again. Only the node's
 * failures count: a request the node refused as invalid, or the client going
 * away, does not.
 */
import CircuitBreaker from "opossum";
import type { GatewayEndpoint, GatewayModel } from "../../crds/api/index.ts";
import type { GatewayMetrics } from "../metrics.ts";
import { UpstreamFailure, type UpstreamResponse } from "./node-client.ts";

export const VOLUME_THRESHOLD = 3;

/** 0 closed, 1 open, 2 half-open, as `pomona status` reads them. */
const stateOf = (b: CircuitBreaker) => (b.opened ? 1 : b.halfOpen ? 2 : 0);

type Attempt = () => Promise<UpstreamResponse>;

export class EndpointBreakers {
  private readonly breakers = new Map<string, CircuitBreaker<[Attempt], UpstreamResponse>>();
  private readonly resetMs: number;
  private readonly metrics: GatewayMetrics;

  constructor(options: { resetMs: number; metrics: GatewayMetrics }) {
    this.resetMs = options.resetMs;
    this.metrics = options.metrics;
  }

  private breakerOf(model: GatewayModel, endpoint: GatewayEndpoint) {
    let breaker = this.breakers.get(endpoint.url);
    if (!breaker) {
      breaker = new CircuitBreaker((attempt: Attempt) => attempt(), {
        // Timeouts are enforced by the node client itself, which can abort the socket.
        timeout: false,
        resetTimeout: this.resetMs,
        errorThresholdPercentage: 50,
        volumeThreshold: VOLUME_THRESHOLD,
        rollingCountTimeout: 10_000,
        rollingCountBuckets: 10,
        errorFilter: (err: unknown) => !(err instanceof UpstreamFailure) || err.code === "UPSTREAM_BUSY",
      });
      const labels = this.labelsOf(model, endpoint);
      this.metrics.breakerState.set(labels, 0);
      breaker.on("open", () => this.metrics.breakerState.set(labels, 1));
      breaker.on("halfOpen", () => this.metrics.breakerState.set(labels, 2));
      breaker.on("close", () => this.metrics.breakerState.set(labels, 0));
      this.breakers.set(endpoint.url, breaker);
    }
    return breaker;
  }

  private labelsOf(model: GatewayModel, endpoint: GatewayEndpoint) {
    // Names only: an endpoint's URL says where a node listens and has no place in metrics.
    return {
      model: `${model.namespace}/${model.name}`,
      replica: endpoint.replica,
      node: endpoint.node,
    };
  }

  /** Whether a call to the endpoint would be refused right now. */
  isOpen(endpoint: GatewayEndpoint): boolean {
    const b = this.breakers.get(endpoint.url);
    return b?.opened === true;
  }

  call(model: GatewayModel, endpoint: GatewayEndpoint, attempt: Attempt): Promise<UpstreamResponse> {
    return this.breakerOf(model, endpoint).fire(attempt);
  }

  /** Follow a new config: a breaker (and a state in the metrics) for every endpoint in it, none for the others. */
  retain(models: readonly GatewayModel[]): void {
    const live = new Set(models.flatMap((m) => m.endpoints.map((e) => e.url)));
    for (const [url, breaker] of this.breakers) {
      if (live.has(url)) continue;
      breaker.shutdown();
      this.breakers.delete(url);
    }
    this.metrics.breakerState.reset();
    for (const m of models) {
      for (const e of m.endpoints) this.metrics.breakerState.set(this.labelsOf(m, e), stateOf(this.breakerOf(m, e)));
    }
  }

  shutdown(): void {
    for (const b of this.breakers.values()) b.shutdown();
    this.breakers.clear();
  }
}
