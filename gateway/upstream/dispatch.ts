/**
 * Sends a request to a model: picks an endpoint, calls it through its breaker,
 * tries another endpoint when the call failed before the first byte, and then
 * the model's fallbacks in order (those the caller may use). Resolves with the answering model and the
 * node's response; the caller owns the response and must call `release`.
 */
import type { GatewayEndpoint, GatewayModel } from "../../crds/api/index.ts";
import type { RouteTable } from "../config-source/route-table.ts";
import { GatewayError, NoReplicaError, UpstreamError, UpstreamTimeoutError } from "../errors.ts";
import type { GatewayMetrics } from "../metrics.ts";
import { type EndpointLoad, pickEndpoint } from "../routing/endpoint-picker.ts";
import type { EndpointBreakers } from "./breakers.ts";
import { ClientGoneError, type NodeClient, UpstreamFailure, type UpstreamResponse } from "./node-client.ts";

export interface Dispatched {
  model: GatewayModel;
  endpoint: GatewayEndpoint;
  response: UpstreamResponse;
  /** Frees the endpoint's outstanding-request slot; call once the answer is over. */
  release: () => void;
}

export interface DispatchRequest {
  table: RouteTable;
  model: GatewayModel;
  /** e.g. /v1/chat/completions */
  path: string;
  /** The body to send, given the name of the model that will answer. */
  payload: (modelName: string) => string;
  affinity: string | undefined;
  /** Whether a fallback may answer this request: the key's allowed models and the kind of request decide. */
  mayAnswer: (model: GatewayModel) => boolean;
  signal: AbortSignal;
  requestId: string;
}

export class Dispatcher {
  private readonly client: NodeClient;
  private readonly breakers: EndpointBreakers;
  private readonly load: EndpointLoad;
  private readonly metrics: GatewayMetrics;

  constructor(deps: { client: NodeClient; breakers: EndpointBreakers; load: EndpointLoad; metrics: GatewayMetrics }) {
    this.client = deps.client;
    this.breakers = deps.breakers;
    this.load = deps.load;
    this.metrics = deps.metrics;
  }

  async dispatch(req: DispatchRequest): Promise<Dispatched> {
    const chain = [req.model];
    for (const name of req.model.fallbacks) {
      const fallback = req.table.resolveModel(req.model.namespace, name);
      if (fallback && !chain.includes(fallback) && req.mayAnswer(fallback)) chain.push(fallback);
    }
    let lastFailure: UpstreamFailure | undefined;
    for (const model of chain) {
      const payload = req.payload(model.name);
      const tried = new Set<string>();
      for (;;) {
        const candidates = model.endpoints.filter((e) => !tried.has(e.url) && !this.breakers.isOpen(e));
        const endpoint = pickEndpoint(candidates, this.load, req.affinity);
        if (!endpoint) break;
        tried.add(endpoint.url);
        const release = this.load.acquire(endpoint.url);
        try {
          const response = await this.breakers.call(model, endpoint, () =>
            this.client.post(`${endpoint.url}${req.path}`, endpoint.node, payload, req.signal, req.requestId),
          );
          this.metrics.upstreamAttempts.inc({ model: model.name, outcome: "ok" });
          if (model !== req.model) this.metrics.fallbacks.inc({ model: req.model.name, fallback: model.name });
          return { model, endpoint, response, release };
        } catch (err) {
          release();
          if (err instanceof ClientGoneError || err instanceof GatewayError) throw err;
          if (err instanceof UpstreamFailure) {
            lastFailure = err;
            this.metrics.upstreamAttempts.inc({ model: model.name, outcome: "failed" });
          } else {
            // The breaker refused the call (it opened meanwhile, or a half-open probe is already out).
            this.metrics.upstreamAttempts.inc({ model: model.name, outcome: "rejected_by_breaker" });
          }
        }
      }
    }
    if (!lastFailure) throw new NoReplicaError(req.model.name);
    if (lastFailure.code === "UPSTREAM_BUSY") throw new NoReplicaError(req.model.name);
    if (lastFailure.code === "UPSTREAM_TIMEOUT") {
      throw new UpstreamTimeoutError(`No replica of the model '${req.model.name}' answered in time.`);
    }
    throw new UpstreamError(`Every replica of the model '${req.model.name}' and its fallbacks failed.`, {
      cause: lastFailure,
    });
  }
}
