/**
 * Sends a request to a model: takes an endpoint with room (fewer outstanding
 * requests than its slots, breaker not open, not answering busy), calls it
 * through its breaker, tries another endpoint when the call failed or was
 * busy before the first byte, and then the model's fallbacks in order (those
 * the caller may use). When no endpoint of the model has room but one would
 * (at its slots, or busy), the request waits in the model's waiting line
 * until a place frees or its deadline passes. Resolves with the answering
 * model and the node's response; the caller owns the response and must call
 * `release`.
 */
import type { GatewayEndpoint, GatewayModel } from "../../crds/api/index.ts";
import type { RouteTable } from "../config-source/route-table.ts";
import { GatewayError, ModelQueueFullError, NoReplicaError, UpstreamError, UpstreamTimeoutError } from "../errors.ts";
import type { GatewayMetrics } from "../metrics.ts";
import { type EndpointLoad, pickEndpoint } from "../routing/endpoint-picker.ts";
import type { EndpointBreakers } from "./breakers.ts";
import { BusyEndpoints } from "./busy-endpoints.ts";
import { ClientGoneError, type NodeClient, UpstreamFailure, type UpstreamResponse } from "./node-client.ts";
import { LineRefusal, type PriorityClass, WaitingLine } from "./waiting-line.ts";

export interface Dispatched {
  model: GatewayModel;
  endpoint: GatewayEndpoint;
  response: UpstreamResponse;
  /** Frees the endpoint's slot (and offers it to the waiting line); call once the answer is over. */
  release: () => void;
  /** Time spent in the waiting line, in ms (0 when a place was free at once). */
  queuedMs: number;
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
  /** Who asks (the key), for turns in the waiting line; never shown anywhere. */
  party: string;
  priority: PriorityClass;
}

/** A slot taken on an endpoint, not yet used. */
interface Place {
  model: GatewayModel;
  endpoint: GatewayEndpoint;
  release: () => void;
}

export const modelId = (m: { namespace: string; name: string }) => `${m.namespace}/${m.name}`;

export class Dispatcher {
  private readonly client: NodeClient;
  private readonly breakers: EndpointBreakers;
  private readonly load: EndpointLoad;
  private readonly metrics: GatewayMetrics;
  private readonly queueTimeoutMs: number;
  private readonly line: WaitingLine<Place>;
  private readonly busy: BusyEndpoints;
  /** The models of the config in use, so a waiter woken after a config change sees the new endpoints. */
  private models = new Map<string, GatewayModel>();

  constructor(deps: {
    client: NodeClient;
    breakers: EndpointBreakers;
    load: EndpointLoad;
    metrics: GatewayMetrics;
    queue: { timeoutMs: number; maxPerModel: number };
  }) {
    this.client = deps.client;
    this.breakers = deps.breakers;
    this.load = deps.load;
    this.metrics = deps.metrics;
    this.queueTimeoutMs = deps.queue.timeoutMs;
    this.line = new WaitingLine<Place>({ maxPerModel: deps.queue.maxPerModel, metrics: deps.metrics });
    this.busy = new BusyEndpoints((model) => this.line.pump(model));
  }

  /** Follow a new config: lines and busy marks of models and endpoints that left it go; waiters try the new endpoints. */
  retain(models: readonly GatewayModel[]): void {
    this.models = new Map(models.map((m) => [modelId(m), m]));
    this.busy.retain(new Set(models.flatMap((m) => m.endpoints.map((e) => e.url))));
    this.line.retain(new Set(this.models.keys()));
    this.line.pumpAll();
  }

  /** The node said, after admitting a request, that the replica cannot serve (unloading): leave it alone a while. */
  unavailable(dispatched: Dispatched, retryAfterMs = 1_000): void {
    this.busy.mark(dispatched.endpoint.url, modelId(dispatched.model), retryAfterMs);
  }

  close(): void {
    this.line.close();
    this.busy.clear();
  }

  /**
   * How long a request for the model may wait in its line. Today the setting for every model; scale from
   * zero will give a model whose first replica is being placed a longer one (see docs/decisions.md).
   */
  private waitBudgetMs(_model: GatewayModel): number {
    return this.queueTimeoutMs;
  }

  async dispatch(req: DispatchRequest): Promise<Dispatched> {
    const chain = [req.model];
    for (const name of req.model.fallbacks) {
      const fallback = req.table.resolveModel(req.model.namespace, name);
      if (fallback && !chain.includes(fallback) && req.mayAnswer(fallback)) chain.push(fallback);
    }
    const lineOf = modelId(req.model);
    /** Endpoints that failed for this request (busy ones are left alone for everyone, in `busy`). */
    const failed = new Set<string>();
    let lastFailure: UpstreamFailure | undefined;
    let busyRetryAfterMs = 0;
    let queuedMs = 0;
    let deadlineAt: number | undefined;
    let resume = false;
    for (;;) {
      // Newcomers go behind those already waiting for the model; only an empty line may be passed by.
      let place =
        this.line.length(lineOf) === 0 ? this.takeFromChain(chain, failed, req.affinity, req.party) : undefined;
      if (!place) {
        if (!this.mayWait(req.model, failed)) {
          throw this.finalError(req.model, lastFailure, this.retryAfterMs(req.model, busyRetryAfterMs));
        }
        deadlineAt ??= performance.now() + this.waitBudgetMs(req.model);
        const since = performance.now();
        try {
          place = await this.line.wait(lineOf, {
            party: req.party,
            priority: req.priority,
            deadlineAt,
            signal: req.signal,
            resume,
            take: () => this.take(this.models.get(lineOf) ?? req.model, failed, req.affinity, req.party),
          });
        } catch (err) {
          if (!(err instanceof LineRefusal)) throw err;
          if (err.reason === "full") throw new ModelQueueFullError(req.model.name);
          throw new NoReplicaError(req.model.name, this.retryAfterMs(req.model, busyRetryAfterMs) / 1000);
        } finally {
          queuedMs += performance.now() - since;
        }
        resume = true;
      }
      const { model, endpoint } = place;
      const ended = this.line.began(lineOf, req.party);
      const release = () => {
        ended();
        place.release();
      };
      try {
        const response = await this.breakers.call(model, endpoint, () =>
          this.client.post(
            `${endpoint.url}${req.path}`,
            endpoint.node,
            req.payload(model.name),
            req.signal,
            req.requestId,
          ),
        );
        this.metrics.upstreamAttempts.inc({ model: model.name, outcome: "ok" });
        if (model.name !== req.model.name) {
          this.metrics.fallbacks.inc({ model: req.model.name, fallback: model.name });
        }
        return { model, endpoint, response, release, queuedMs: Math.round(queuedMs) };
      } catch (err) {
        if (err instanceof UpstreamFailure && err.code === "UPSTREAM_BUSY") {
          // Mark it before the slot is released, so the release does not offer it again at once.
          this.busy.mark(endpoint.url, modelId(model), err.retryAfterMs);
          busyRetryAfterMs = Math.max(busyRetryAfterMs, err.retryAfterMs);
          this.metrics.upstreamAttempts.inc({ model: model.name, outcome: "busy" });
        } else if (err instanceof UpstreamFailure) {
          failed.add(endpoint.url);
          lastFailure = err;
          this.metrics.upstreamAttempts.inc({ model: model.name, outcome: "failed" });
        } else if (!(err instanceof ClientGoneError || err instanceof GatewayError)) {
          // The breaker refused the call (it opened meanwhile, or a half-open probe is already out).
          failed.add(endpoint.url);
          this.metrics.upstreamAttempts.inc({ model: model.name, outcome: "rejected_by_breaker" });
        }
        release();
        if (err instanceof ClientGoneError || err instanceof GatewayError) throw err;
      }
    }
  }

  private takeFromChain(
    chain: GatewayModel[],
    failed: ReadonlySet<string>,
    affinity: string | undefined,
    party: string,
  ) {
    for (const model of chain) {
      const place = this.take(model, failed, affinity, party);
      if (place) return place;
    }
    return undefined;
  }

  /** Take a slot on an endpoint of the model with room, if there is one and the party is within its share. */
  private take(
    model: GatewayModel,
    failed: ReadonlySet<string>,
    affinity: string | undefined,
    party: string,
  ): Place | undefined {
    const line = modelId(model);
    let slots = 0;
    for (const e of model.endpoints) slots += e.slots;
    if (this.line.servingOf(line, party) >= this.line.shareOf(line, party, slots)) return undefined;
    const candidates = model.endpoints.filter(
      (e) => !failed.has(e.url) && !this.busy.has(e.url) && this.load.of(e.url) < e.slots && !this.breakers.isOpen(e),
    );
    const endpoint = pickEndpoint(candidates, this.load, affinity);
    if (!endpoint) return undefined;
    const free = this.load.acquire(endpoint.url);
    return {
      model,
      endpoint,
      release: () => {
        free();
        this.line.pump(line);
      },
    };
  }

  /**
   * Whether waiting can help: the model has an endpoint that neither failed for this request nor has an open
   * breaker (so it had no room, was busy, or others are waiting for it). A model without one answers at once.
   */
  private mayWait(model: GatewayModel, failed: ReadonlySet<string>): boolean {
    const current = this.models.get(modelId(model)) ?? model;
    return current.endpoints.some((e) => !failed.has(e.url) && !this.breakers.isOpen(e));
  }

  /** What to tell the client: the busy node's own Retry-After when a node said busy, at least. */
  private retryAfterMs(model: GatewayModel, ownBusyMs: number): number {
    const current = this.models.get(modelId(model)) ?? model;
    return Math.max(ownBusyMs, this.busy.soonestFreeMs(current.endpoints.map((e) => e.url)));
  }

  private finalError(model: GatewayModel, lastFailure: UpstreamFailure | undefined, busyRetryAfterMs: number): Error {
    if (!lastFailure) return new NoReplicaError(model.name, busyRetryAfterMs / 1000);
    if (lastFailure.code === "UPSTREAM_TIMEOUT") {
      return new UpstreamTimeoutError(`No replica of the model '${model.name}' answered in time.`);
    }
    return new UpstreamError(`Every replica of the model '${model.name}' and its fallbacks failed.`, {
      cause: lastFailure,
    });
  }
}
