/**
 * The OpenAI routes of each replica, under /replicas/<namespace>/<replica>/v1. Every request holds one of
 * the replica's sequences while it generates; a client that goes away aborts its generation at once, and so
 * does the gateway's cancel by id (DELETE /requests/<id>), which leaves the connection open for the next call.
 * Everything that can refuse a request (schema, prompt length, a full queue, an unloading replica) is
 * decided before the 200 headers go out at admission; a failure after them is an error envelope in the body.
 */
import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import type { LlamaText } from "node-llama-cpp";
import { z } from "zod";
import { nodeCancel } from "../../crds/api/index.ts";
import {
  type ChatCompletionRequest,
  type CompletionRequest,
  chatCompletionRequest,
  completionRequest,
  embeddingRequest,
} from "../../crds/api/openai-requests.ts";
import type { CancellableRequests } from "../cancellable-requests.ts";
import { ChatDeltas, type ChatTurn, prepareChatTurn } from "../chat-turn.ts";
import { answerChoices, type Kind, StreamChoices } from "../choices.ts";
import { AgentError, ClientGoneError, invalid, replicaNotFound, toAgentError, unloading } from "../errors.ts";
import type { NodeAgentMetrics } from "../metrics.ts";
import { replicaParams } from "../openai-schemas.ts";
import type { GenerationParams, GenerationResult } from "../replica-engine.ts";
import type { ReplicaSlot } from "../replica-manager.ts";
import { samplingParams } from "../sampling-params.ts";
import { JsonAnswer, type ResponseTiming } from "./admitted-response.ts";
import { EventStream } from "./sse.ts";

/** Where the routes find a Ready replica by namespace and name. */
export interface ReplicaDirectory {
  ready: (namespace: string, name: string) => ReplicaSlot | undefined;
}

interface Options {
  manager: ReplicaDirectory;
  metrics: NodeAgentMetrics;
  timing: ResponseTiming;
  cancellable: CancellableRequests;
}

export async function inferenceRoutes(
  app: FastifyInstance,
  { manager, metrics, timing, cancellable }: Options,
): Promise<void> {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const base = "/replicas/:namespace/:name/v1";

  const replicaOf = (params: { namespace: string; name: string }): ReplicaSlot => {
    const slot = manager.ready(params.namespace, params.name);
    if (!slot) throw replicaNotFound(params.namespace, params.name);
    return slot;
  };

  // 204 when a running request had the id; 404 when none has (it ended, or was never cancellable).
  r.delete(nodeCancel.route, { schema: { params: z.object({ id: z.string().max(64) }) } }, async (request, reply) => {
    if (cancellable.cancel(request.params.id)) return reply.code(204).send();
    throw new AgentError(404, "not_found_error", "not_found", "No running request has this id.");
  });

  r.get(`${base}/models`, { schema: { params: replicaParams } }, async (request) => {
    const slot = replicaOf(request.params);
    return {
      object: "list",
      data: [{ id: slot.model, object: "model", created: 0, owned_by: `pomona:${slot.namespace}` }],
    };
  });

  r.post(
    `${base}/chat/completions`,
    { schema: { params: replicaParams, body: chatCompletionRequest } },
    (request, reply) => generate(request, reply, "chat", replicaOf(request.params), request.body),
  );

  r.post(`${base}/completions`, { schema: { params: replicaParams, body: completionRequest } }, (request, reply) =>
    generate(request, reply, "completion", replicaOf(request.params), request.body),
  );

  r.post(`${base}/embeddings`, { schema: { params: replicaParams, body: embeddingRequest } }, async (request) => {
    const slot = replicaOf(request.params);
    if (!slot.embeddings) throw invalid("This model does not serve embeddings.", "model");
    const inputs = typeof request.body.input === "string" ? [request.body.input] : request.body.input;
    const { vectors, tokens } = await slot.engine!.embed(inputs).catch((err) => {
      throw toAgentError(err, "input") ?? err;
    });
    const base64 = request.body.encoding_format === "base64";
    return {
      object: "list",
      model: request.body.model,
      data: vectors.map((v, index) => ({
        object: "embedding",
        index,
        embedding: base64 ? Buffer.from(new Float32Array(v).buffer).toString("base64") : v,
      })),
      usage: { prompt_tokens: tokens, total_tokens: tokens },
    };
  });

  async function generate(
    request: FastifyRequest,
    reply: FastifyReply,
    kind: Kind,
    slot: ReplicaSlot,
    body: ChatCompletionRequest | CompletionRequest,
  ): Promise<unknown> {
    const engine = slot.engine!;
    const labels = { namespace: slot.namespace, replica: slot.name, model: slot.model };
    const endpoint = kind === "chat" ? "chat" : "completions";
    const promptParam = kind === "chat" ? "messages" : "prompt";

    // The replica's own stop signal aborts every request when it unloads; the socket's close, or the gateway's
    // cancel by id, aborts this one.
    const clientGone = new AbortController();
    const signal = AbortSignal.any([clientGone.signal, slot.stop.signal]);
    const forget = cancellable.add(request.headers[nodeCancel.header], clientGone);
    reply.raw.on("close", () => {
      forget();
      if (!reply.raw.writableFinished) clientGone.abort(new Error("the client went away"));
    });
    /** Before admission: a plain HTTP error (4xx, 429 busy, 503 unloading with Retry-After), counted. */
    const refused = (err: unknown): never => {
      // A caller that left while queued is no error of ours; there is no one left to answer.
      if (clientGone.signal.aborted) {
        metrics.requests.inc({ ...labels, endpoint, outcome: "aborted" });
        throw new ClientGoneError();
      }
      const known = toAgentError(err, promptParam);
      metrics.requests.inc({ ...labels, endpoint, outcome: known && known.status < 500 ? "rejected" : "error" });
      throw known ?? err;
    };

    let sampling: ReturnType<typeof samplingParams>;
    let prompt: string | LlamaText;
    let templateStops: string[] = [];
    let turn: ChatTurn | undefined;
    try {
      sampling = samplingParams(body, engine.model);
      if (kind === "chat") {
        turn = await prepareChatTurn(engine, body as ChatCompletionRequest);
        prompt = turn.prompt;
        templateStops = turn.stop;
      } else {
        const p = (body as CompletionRequest).prompt;
        prompt = typeof p === "string" ? p : (p[0] ?? "");
      }
    } catch (err) {
      return refused(err);
    }
    const userStops = body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
    const params: GenerationParams = {
      maxTokens:
        (kind === "chat" ? (body as ChatCompletionRequest).max_completion_tokens : undefined) ??
        body.max_tokens ??
        undefined,
      temperature: body.temperature ?? undefined,
      topP: body.top_p ?? undefined,
      seed: body.seed ?? undefined,
      stop: [...userStops, ...templateStops],
      presencePenalty: body.presence_penalty ?? undefined,
      frequencyPenalty: body.frequency_penalty ?? undefined,
      ...sampling,
      grammar: turn?.grammar,
    };
    // Legacy completions count text offsets from the start of the prompt.
    const promptChars = typeof prompt === "string" ? prompt.length : 0;
    const streamChoices = new StreamChoices(kind, promptChars);

    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const object = kind === "chat" ? "chat.completion" : "text_completion";
    const chunkObject = kind === "chat" ? "chat.completion.chunk" : "text_completion";
    const chunk = (choices: unknown[], extra: object = {}) => ({
      id,
      object: chunkObject,
      created,
      model: body.model,
      choices,
      ...extra,
    });

    // The answer exists once the request is admitted: its 200 headers go out then (docs/node-agent.md, "Sign of life at admission").
    let json: JsonAnswer | undefined;
    let stream: EventStream | undefined;
    const admitted = () => {
      reply.hijack();
      if (body.stream !== true) {
        json = new JsonAnswer(reply.raw, timing);
        return;
      }
      stream = new EventStream(reply.raw, timing);
      if (kind === "chat") stream.send(chunk([streamChoices.opening(0)]));
    };
    const answer = () => json ?? stream;
    // With tools offered, chat deltas go through the turn, which holds a tool call back until it is complete
    // (chat-turn.ts); one per choice.
    const toolDeltas = new Map<number, ChatDeltas>();
    const toolDeltasOf = (index: number) => {
      if (!turn?.tools || body.stream !== true) return undefined;
      let deltas = toolDeltas.get(index);
      if (!deltas) {
        deltas = new ChatDeltas(turn, (delta) =>
          stream?.sendGenerated(chunk([{ index, delta, logprobs: null, finish_reason: null }])),
        );
        toolDeltas.set(index, deltas);
      }
      return deltas;
    };
    /** Back-pressure: the generation waits while the client's socket is full (admitted-response.ts). */
    const gate = () => {
      const wait = stream?.gate();
      if (!wait) return undefined;
      metrics.pausedStreams.inc(labels);
      return wait.finally(() => metrics.pausedStreams.dec(labels));
    };
    const outcomeOf = (aborted: boolean) => (answer()?.stalled ? "stalled" : aborted ? "aborted" : "ok");

    const record = (result: GenerationResult) => {
      metrics.tokensGenerated.inc(labels, result.completionTokens);
      metrics.promptTokens.inc(labels, result.promptTokens);
      if (result.firstTokenMs !== undefined) {
        metrics.timeToFirstToken.observe(labels, result.firstTokenMs / 1000);
        const genSeconds = (result.totalMs - result.firstTokenMs) / 1000;
        if (result.completionTokens > 1 && genSeconds > 0)
          metrics.tokensPerSecond.observe(labels, (result.completionTokens - 1) / genSeconds);
      }
      metrics.requests.inc({ ...labels, endpoint, outcome: outcomeOf(result.aborted) });
    };
    const usageOf = (result: GenerationResult) => ({
      prompt_tokens: result.promptTokens,
      completion_tokens: result.completionTokens,
      total_tokens: result.promptTokens + result.completionTokens,
    });
    /** After the headers went out, the only honest signal left is an error envelope in the body. */
    const failAfterHeaders = (error: AgentError) => {
      if (stream) {
        stream.send(error.envelope());
        stream.end();
      } else json?.end(error.envelope());
    };

    let result: GenerationResult;
    try {
      result = await engine.complete(prompt, params, {
        signal,
        onAdmitted: admitted,
        gate,
        onText:
          body.stream !== true
            ? undefined
            : (text, index, logprobs) => {
                const deltas = toolDeltasOf(index);
                if (deltas) deltas.text(text);
                else stream?.sendGenerated(chunk([streamChoices.text(index, text, logprobs)]));
              },
        onChoiceEnd: (choice) => {
          if (!stream) return;
          const finishReason = toolDeltasOf(choice.index)?.finish(choice.text, choice.finishReason);
          stream.send(chunk([streamChoices.finish(choice, finishReason)]));
          if (kind === "chat" && choice.index + 1 < (body.n ?? 1))
            stream.send(chunk([streamChoices.opening(choice.index + 1)]));
        },
      });
    } catch (err) {
      if (!answer()) return refused(err);
      if (clientGone.signal.aborted) {
        metrics.requests.inc({ ...labels, endpoint, outcome: outcomeOf(true) });
        answer()?.abandon();
        return reply;
      }
      // A replica unloading under a request is "unavailable, try elsewhere", not a failure.
      const known = slot.stop.signal.aborted ? unloading() : toAgentError(err, promptParam);
      metrics.requests.inc({ ...labels, endpoint, outcome: "error" });
      failAfterHeaders(known ?? new AgentError(500, "server_error", "internal_error", "generation failed"));
      request.log.warn({ err: (err as Error).message, code: known?.code }, "generation failed after admission");
      return reply;
    }
    record(result);
    if (result.aborted) {
      // The client left, stalled and was cut off, or cancelled: nobody to answer, and a cancelled answer ends
      // here so its connection carries the next call. Otherwise the replica is unloading.
      if (clientGone.signal.aborted) answer()?.abandon();
      else failAfterHeaders(unloading("the replica unloaded during generation"));
      return reply;
    }
    if (json) {
      const choices = answerChoices(turn, result.choices, promptChars);
      json.end({ id, object, created, model: body.model, choices, usage: usageOf(result) });
      return reply;
    }
    if (body.stream_options?.include_usage) stream?.send(chunk([], { usage: usageOf(result) }));
    stream?.end();
    return reply;
  }
}
