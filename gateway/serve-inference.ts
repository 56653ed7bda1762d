/**
 * Serves one inference request, the gateway's hot path: resolve the model in
 * the key's namespace, check the key may use it, admit it against the limits,
 * dispatch it to a node, relay the answer (JSON or SSE), and on every exit
 * path free the endpoint slot, settle the tokens and free the concurrency slot.
 */
import { randomUUID } from "node:crypto";
import type { ServerResponse } from "node:http";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { GatewayModel } from "../crds/api/index.ts";
import {
  type ChatCompletionRequest,
  type CompletionRequest,
  type EmbeddingRequest,
  samplingRefusal,
} from "../crds/api/openai-requests.ts";
import { logprobsAnswerBytes } from "./answer-limit.ts";
import { keyMayUse } from "./config-source/route-table.ts";
import {
  GatewayError,
  InvalidRequestError,
  LimitsUnavailableError,
  ModelNotAllowedError,
  ModelNotFoundError,
  NoReplicaError,
  RateLimitedError,
  UpstreamError,
  UpstreamResponseTooLargeError,
  UpstreamTimeoutError,
} from "./errors.ts";
import type { Limiter, Ticket } from "./limits/limiter.ts";
import { limitChecks } from "./limits/plan.ts";
import { LimitsUnavailable } from "./limits/redis-limiter.ts";
import { estimatePromptTokens, reservation } from "./limits/token-estimate.ts";
import type { GatewayMetrics } from "./metrics.ts";
import { promptText } from "./openai-schemas.ts";
import { conversationAffinity } from "./routing/endpoint-picker.ts";
import { SseRelay, tokensOf, type Usage } from "./sse-relay.ts";
import type { Dispatched, Dispatcher } from "./upstream/dispatch.ts";
import { ClientGoneError } from "./upstream/node-client.ts";
import type { StreamTranslator, WireFormat, WireRequest } from "./wire/wire-format.ts";

export type InferenceKind = "chat" | "completion" | "embedding";
type InferenceBody = ChatCompletionRequest | CompletionRequest | EmbeddingRequest;

const PATHS: Record<InferenceKind, string> = {
  chat: "/v1/chat/completions",
  completion: "/v1/completions",
  embedding: "/v1/embeddings",
};

export interface InferenceDeps {
  limiter: Limiter;
  dispatcher: Dispatcher;
  metrics: GatewayMetrics;
  now: () => number;
  totalTimeoutMs: number;
  /** Largest non-streamed answer read from a node (answer-limit.ts). */
  answerLimitBytes: number;
}

/**
 * A non-streamed answer is read whole, up to the answer limit: a request whose logprobs could make it
 * larger is refused before any work, rather than answered 502 after it (a stream has no such limit).
 */
function refuseOversizedAnswer(
  body: ChatCompletionRequest | CompletionRequest,
  maxTokens: number,
  limit: number,
): void {
  const bytes = logprobsAnswerBytes(body, maxTokens);
  if (bytes === undefined || bytes <= limit) return;
  const param = "messages" in body && body.top_logprobs ? "top_logprobs" : "logprobs";
  throw new InvalidRequestError(
    `With ${param} this answer could reach about ${Math.ceil(bytes / 2 ** 20)} MiB, more than the ${Math.floor(limit / 2 ** 20)} MiB a non-streamed answer may be; use stream: true, or lower n, max_tokens or ${param}.`,
    param,
  );
}

/** `wire`: the request is in another wire format (gateway/wire/), served as the chat completion it becomes. */
export function inferenceHandler(deps: InferenceDeps, kind: InferenceKind, wire?: WireFormat) {
  return async function serve(request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const translated: WireRequest | undefined = wire?.begin(request.body);
    const body = (translated?.chat ?? request.body) as InferenceBody;
    const table = request.routeTable!;
    const caller = request.caller!;
    // Resolve first, then check: an alias resolves to its model, so it cannot dodge the allowed list.
    const model = table.resolveModel(caller.key.namespace, body.model);
    if (!model) throw new ModelNotFoundError(body.model);
    request.requestedModel = model.name;
    if (!keyMayUse(table, caller, model)) throw new ModelNotAllowedError(body.model);
    if (kind === "embedding" && !model.embeddings) {
      throw new InvalidRequestError(`The model '${body.model}' does not serve embeddings.`, "model");
    }
    const maxTokens =
      "messages" in body
        ? (body.max_completion_tokens ?? body.max_tokens)
        : "prompt" in body
          ? body.max_tokens
          : undefined;
    // One request holds one sequence, so its context — not the replica's whole one — bounds the answer.
    if (maxTokens != null && maxTokens > model.sequenceContextSize) {
      const param = "messages" in body && body.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
      throw new InvalidRequestError(
        `${param} is ${maxTokens}, more than the ${model.sequenceContextSize} tokens one request to this model may hold.`,
        param,
      );
    }
    const refusal =
      kind === "embedding" ? undefined : samplingRefusal(body as ChatCompletionRequest | CompletionRequest);
    if (refusal) throw new InvalidRequestError(refusal.message, refusal.param);
    if (kind !== "embedding" && (body as ChatCompletionRequest).stream !== true)
      refuseOversizedAnswer(
        body as ChatCompletionRequest | CompletionRequest,
        maxTokens ?? model.sequenceContextSize,
        deps.answerLimitBytes,
      );
    const text = promptText(body);
    // n choices each may generate up to max_tokens; the prompt is counted once, as in OpenAI's usage.
    const choices = kind === "embedding" ? 1 : ((body as ChatCompletionRequest).n ?? 1);
    const tokens =
      kind === "embedding"
        ? estimatePromptTokens(text)
        : reservation(text, maxTokens ?? undefined, model.sequenceContextSize, choices);
    const ticket = await admit(deps, request, model, tokens);

    const stream = kind !== "embedding" && (body as ChatCompletionRequest).stream === true;
    const includeUsage = stream && (body as ChatCompletionRequest).stream_options?.include_usage === true;
    const abort = new AbortController();
    let why: "client" | "timeout" | undefined;
    const onClose = () => {
      if (reply.raw.writableFinished) return;
      why ??= "client";
      abort.abort();
    };
    reply.raw.once("close", onClose);
    const timer = setTimeout(() => {
      why ??= "timeout";
      abort.abort();
    }, deps.totalTimeoutMs);
    // Nothing reached a node yet: refund everything unless an answer says otherwise.
    let actualTokens: number | undefined = 0;
    let dispatched: Dispatched | undefined;
    deps.metrics.inFlight.inc();
    const started = performance.now();
    try {
      const dispatchRequest = {
        table,
        model,
        path: PATHS[kind],
        payload: (name: string) =>
          JSON.stringify(
            stream
              ? { ...body, model: name, stream: true, stream_options: { include_usage: true } }
              : { ...body, model: name },
          ),
        affinity: "messages" in body ? conversationAffinity(body.messages) : undefined,
        // A fallback is no way around the key's allowed models, nor to a model without embeddings.
        mayAnswer: (m: GatewayModel) => keyMayUse(table, caller, m) && (kind !== "embedding" || m.embeddings),
        signal: abort.signal,
        requestId: request.id,
        party: caller.key.hash,
        // The key's policy places its requests in the line; a model's policy is the same for everyone in it.
        priority: table.policy(caller.key.namespace, caller.key.rateLimitPolicy)?.priorityClass ?? "interactive",
      };
      dispatched = await deps.dispatcher.dispatch(dispatchRequest);
      let queuedMs = dispatched.queuedMs;
      request.answeredModel = dispatched.model.name;
      reply.header("x-pomona-queue-ms", String(queuedMs));
      // The node may be generating now: without a usage report, the reservation stands.
      actualTokens = undefined;
      if (stream) {
        const translator = translated?.stream(dispatched.model.name);
        actualTokens = await relayStream(
          request,
          reply,
          dispatched,
          includeUsage,
          deps,
          started,
          () => why,
          translator,
        );
        return reply;
      }
      deps.metrics.timeToFirstToken.observe({ model: dispatched.model.name }, (performance.now() - started) / 1000);
      let answer: Record<string, unknown>;
      for (let retries = 0; ; retries++) {
        try {
          answer = await readAnswer(dispatched, deps.answerLimitBytes);
          break;
        } catch (err) {
          // Nothing reached the client yet: a node that died or started unloading after admitting the
          // request (its headers arrive early) is retried on another replica, a few times at most.
          if (!(err instanceof LateUpstreamFailure) || abort.signal.aborted || retries >= LATE_RETRIES) {
            throw err instanceof LateUpstreamFailure ? err.answer : err;
          }
          request.log.warn({ code: err.answer.code }, "the node failed after admitting the request; trying again");
          if (err.answer instanceof NoReplicaError) deps.dispatcher.unavailable(dispatched);
          dispatched.release();
          dispatched = undefined;
          dispatched = await deps.dispatcher.dispatch(dispatchRequest);
          queuedMs += dispatched.queuedMs;
          request.answeredModel = dispatched.model.name;
          reply.header("x-pomona-queue-ms", String(queuedMs));
        }
      }
      const usage = answer.usage as Usage | undefined;
      actualTokens = tokensOf(usage);
      countTokens(deps.metrics, dispatched.model.name, caller.key.owner, usage);
      answer.model = dispatched.model.name;
      const sent = translated ? translated.answer(answer as never, dispatched.model.name) : answer;
      return reply.header("x-pomona-model", dispatched.model.name).send(sent);
    } catch (err) {
      if (why === "client") throw new ClientGoneError();
      if (why === "timeout") throw new UpstreamTimeoutError(`The model '${model.name}' did not finish in time.`);
      throw err;
    } finally {
      clearTimeout(timer);
      reply.raw.off("close", onClose);
      dispatched?.release();
      deps.metrics.inFlight.dec();
      void deps.limiter.finish(ticket, actualTokens);
    }
  };
}

async function admit(
  deps: InferenceDeps,
  request: FastifyRequest,
  model: GatewayModel,
  tokens: number,
): Promise<Ticket> {
  const checks = limitChecks(request.routeTable!, request.caller!.key, model);
  const admission = { requestId: randomUUID(), checks, tokens, nowMs: deps.now() };
  let result: Awaited<ReturnType<Limiter["admit"]>>;
  try {
    result =
      checks.length === 0 ? { ok: true, ticket: { admission, unlimited: true } } : await deps.limiter.admit(admission);
  } catch (err) {
    if (err instanceof LimitsUnavailable) throw new LimitsUnavailableError();
    throw err;
  }
  if (result.ok) return result.ticket;
  const { rejection } = result;
  deps.metrics.limitRejections.inc({ limit: rejection.limit, scope: rejection.check.policy.scope });
  throw new RateLimitedError(
    rejection.limit,
    rejection.limitValue,
    rejection.retryAfterMs,
    rejection.check.policy.name,
  );
}

/** Read from the node's answer before anything reached the client; `answer` is what to tell the client if it is the last try. */
class LateUpstreamFailure extends Error {
  readonly answer: GatewayError;
  constructor(answer: GatewayError) {
    super(answer.message);
    this.answer = answer;
  }
}

const LATE_RETRIES = 2;

/**
 * The node's JSON answer. It sent its headers when it admitted the request, then a space every keep-alive
 * interval while it waited or generated (JSON.parse skips leading whitespace), then the answer. An error
 * after the headers comes as the OpenAI error envelope with status 200 (docs/node-contract.md §2).
 */
async function readAnswer(dispatched: Dispatched, limitBytes: number): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    // Leaving the loop early (the throw) destroys the node's body, so the rest is never read.
    for await (const chunk of dispatched.response.body) {
      size += (chunk as Buffer).length;
      if (size > limitBytes) throw new UpstreamResponseTooLargeError("answer", limitBytes);
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    throw new LateUpstreamFailure(new UpstreamError("The model server's answer broke off."));
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    // Reported below.
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new UpstreamError("The model server's answer is not a JSON object.");
  }
  const answer = parsed as Record<string, unknown>;
  if ("error" in answer) throw lateUpstreamError(dispatched.model.name, answer.error);
  return answer;
}

/**
 * A node's failure after it admitted the request: unloading or draining is worth another replica (then
 * 503 with Retry-After), anything else is 502.
 */
function lateUpstreamError(model: string, error: unknown): Error {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "replica_unloading" || code === "node_draining") {
    return new LateUpstreamFailure(new NoReplicaError(model));
  }
  return new UpstreamError(
    `The model server failed while answering (${typeof code === "string" ? code.slice(0, 64) : "no code"}).`,
  );
}

function countTokens(metrics: GatewayMetrics, model: string, owner: string, usage: Usage | undefined): void {
  if (!usage) return;
  if (typeof usage.prompt_tokens === "number")
    metrics.tokens.inc({ model, owner, direction: "prompt" }, usage.prompt_tokens);
  if (typeof usage.completion_tokens === "number") {
    metrics.tokens.inc({ model, owner, direction: "completion" }, usage.completion_tokens);
  }
}

/** Wait until the client can take more, or is gone. */
function drained(raw: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      raw.off("drain", done);
      raw.off("close", done);
      resolve();
    };
    raw.once("drain", done);
    raw.once("close", done);
  });
}

/** Relay the node's SSE to the client with backpressure; returns the tokens the node reported, if it did. */
async function relayStream(
  request: FastifyRequest,
  reply: FastifyReply,
  dispatched: Dispatched,
  includeUsage: boolean,
  deps: InferenceDeps,
  started: number,
  why: () => "client" | "timeout" | undefined,
  translator?: StreamTranslator,
): Promise<number | undefined> {
  reply.hijack();
  const raw = reply.raw;
  const headers: Record<string, string | number | string[]> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) headers[name] = value;
  raw.writeHead(200, {
    ...headers,
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
    "x-pomona-model": dispatched.model.name,
  });
  const relay = new SseRelay(dispatched.model.name, includeUsage, undefined, translator);
  const upstream = dispatched.response.body;
  upstream.setEncoding("utf8");
  let first = true;
  try {
    for await (const chunk of upstream) {
      // Once the client left or the time ran out, the node's call was cancelled (node-client.ts): the rest is
      // read to its end and dropped, so the connection can carry the next call.
      if (why() !== undefined || raw.destroyed) continue;
      const out = relay.push(chunk as string);
      // The node's keep-alive comments come before the first token; they are not it.
      if (first && relay.events > 0) {
        first = false;
        deps.metrics.timeToFirstToken.observe({ model: dispatched.model.name }, (performance.now() - started) / 1000);
      }
      if (out !== "" && !raw.write(out)) await drained(raw);
    }
    if (!relay.done && !raw.destroyed) throw new UpstreamError("The model server ended the stream early.");
  } catch (err) {
    if (why() === "client" || raw.destroyed) {
      request.log.info("client went away; the node's generation was stopped");
    } else {
      const error =
        why() === "timeout"
          ? new UpstreamTimeoutError(`The model '${dispatched.model.name}' did not finish in time.`)
          : err instanceof UpstreamError
            ? err
            : new UpstreamError("The model server's stream broke off.");
      request.log.warn({ code: error.code }, "stream from the node failed after it started");
      raw.write(translator ? translator.fail(error) : `data: ${JSON.stringify(error.envelope())}\n\n`);
    }
  } finally {
    // A stream that broke off is not read to its end: closing the connection stops the node.
    if (!upstream.readableEnded) upstream.destroy();
    if (!raw.destroyed) raw.end();
  }
  countTokens(deps.metrics, dispatched.model.name, request.caller!.key.owner, relay.usage);
  return tokensOf(relay.usage);
}
