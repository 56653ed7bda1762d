/**
 * The OpenAI routes of each replica, under /replicas/<namespace>/<replica>/v1. Every request holds one of
 * the replica's sequences while it generates; a client that goes away aborts its generation at once.
 */
import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import type { LlamaText } from "node-llama-cpp";
import {
  type ChatCompletionRequest,
  type CompletionRequest,
  chatCompletionRequest,
  completionRequest,
  embeddingRequest,
} from "../../crds/api/openai-requests.ts";
import { chatPrompt } from "../chat-prompt.ts";
import { AgentError, ClientGoneError, invalid, replicaNotFound, toAgentError } from "../errors.ts";
import type { NodeAgentMetrics } from "../metrics.ts";
import { replicaParams } from "../openai-schemas.ts";
import type { GenerationParams, GenerationResult } from "../replica-engine.ts";
import type { ReplicaSlot } from "../replica-manager.ts";
import { EventStream } from "./sse.ts";

/** Where the routes find a Ready replica by namespace and name. */
export interface ReplicaDirectory {
  ready: (namespace: string, name: string) => ReplicaSlot | undefined;
}

interface Options {
  manager: ReplicaDirectory;
  metrics: NodeAgentMetrics;
}

type Kind = "chat" | "completion";

export async function inferenceRoutes(app: FastifyInstance, { manager, metrics }: Options): Promise<void> {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const base = "/replicas/:namespace/:name/v1";

  const replicaOf = (params: { namespace: string; name: string }): ReplicaSlot => {
    const slot = manager.ready(params.namespace, params.name);
    if (!slot) throw replicaNotFound(params.namespace, params.name);
    return slot;
  };

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
    let prompt: string | LlamaText;
    let templateStops: string[] = [];
    if (kind === "chat") {
      const chat = chatPrompt(engine.model, (body as ChatCompletionRequest).messages);
      prompt = chat.prompt;
      templateStops = chat.stop;
    } else {
      const p = (body as CompletionRequest).prompt;
      prompt = typeof p === "string" ? p : (p[0] ?? "");
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
    };

    // The replica's own stop signal aborts every request when it unloads; the socket's close aborts this one.
    const clientGone = new AbortController();
    const signal = AbortSignal.any([clientGone.signal, slot.stop.signal]);
    reply.raw.on("close", () => {
      if (!reply.raw.writableFinished) clientGone.abort(new Error("the client went away"));
    });

    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const object = kind === "chat" ? "chat.completion" : "text_completion";
    const promptParam = kind === "chat" ? "messages" : "prompt";

    const record = (result: GenerationResult) => {
      metrics.tokensGenerated.inc(labels, result.completionTokens);
      metrics.promptTokens.inc(labels, result.promptTokens);
      if (result.firstTokenMs !== undefined) {
        metrics.timeToFirstToken.observe(labels, result.firstTokenMs / 1000);
        const genSeconds = (result.totalMs - result.firstTokenMs) / 1000;
        if (result.completionTokens > 1 && genSeconds > 0)
          metrics.tokensPerSecond.observe(labels, (result.completionTokens - 1) / genSeconds);
      }
      metrics.requests.inc({ ...labels, endpoint, outcome: result.aborted ? "aborted" : "ok" });
    };
    const usageOf = (result: GenerationResult) => ({
      prompt_tokens: result.promptTokens,
      completion_tokens: result.completionTokens,
      total_tokens: result.promptTokens + result.completionTokens,
    });
    const failed = (err: unknown): never => {
      // A caller that left while queued is no error of ours; there is no one left to answer.
      if (clientGone.signal.aborted) {
        metrics.requests.inc({ ...labels, endpoint, outcome: "aborted" });
        throw new ClientGoneError();
      }
      const known = toAgentError(err, promptParam);
      metrics.requests.inc({ ...labels, endpoint, outcome: known && known.status < 500 ? "rejected" : "error" });
      throw known ?? err;
    };

    if (body.stream !== true) {
      const result = await engine.complete(prompt, params, { signal }).catch(failed);
      record(result);
      if (result.aborted && clientGone.signal.aborted) return reply;
      const choice =
        kind === "chat"
          ? { index: 0, message: { role: "assistant", content: result.text }, finish_reason: result.finishReason }
          : { index: 0, text: result.text, finish_reason: result.finishReason, logprobs: null };
      return { id, object, created, model: body.model, choices: [choice], usage: usageOf(result) };
    }

    // Admission first, so a full queue or a too-long prompt is a plain HTTP error, not a broken stream.
    const chunkObject = kind === "chat" ? "chat.completion.chunk" : "text_completion";
    const chunk = (choices: unknown[], extra: object = {}) => ({
      id,
      object: chunkObject,
      created,
      model: body.model,
      choices,
      ...extra,
    });
    let stream: EventStream | undefined;
    const open = () => {
      if (stream) return stream;
      reply.hijack();
      stream = new EventStream(reply.raw);
      if (kind === "chat")
        stream.send(chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]));
      return stream;
    };
    let result: GenerationResult;
    try {
      result = await engine.complete(prompt, params, {
        signal,
        onText: (text) => {
          const s = open();
          s.send(
            chunk([
              kind === "chat"
                ? { index: 0, delta: { content: text }, finish_reason: null }
                : { index: 0, text, finish_reason: null, logprobs: null },
            ]),
          );
        },
      });
    } catch (err) {
      if (!stream) return failed(err);
      // Headers are gone: the only honest signal left is an error event and the end of the stream.
      const known = toAgentError(err, promptParam);
      stream.send({
        error: (known ?? new AgentError(500, "server_error", "internal_error", "generation failed")).envelope().error,
      });
      stream.end();
      request.log.warn({ err: (err as Error).message }, "stream failed mid-way");
      return reply;
    }
    record(result);
    const s = open();
    if (!result.aborted || !clientGone.signal.aborted) {
      s.send(
        chunk([
          kind === "chat"
            ? { index: 0, delta: {}, finish_reason: result.finishReason }
            : { index: 0, text: "", finish_reason: result.finishReason, logprobs: null },
        ]),
      );
      if (body.stream_options?.include_usage) s.send(chunk([], { usage: usageOf(result) }));
      s.end();
    }
    return reply;
  }
}
