/**
 * The OpenAI request bodies Pomona serves, as zod schemas: the gateway validates a client's request with
 * them and the node-agent validates what the gateway forwards, so both refuse and accept the same. Objects
 * are strict, so a parameter Pomona cannot honour (n > 1, logprobs, tools, dimensions, …) is named in a
 * 400 instead of being silently ignored. Text messages only, no tools.
 */
import { z } from "zod";

const maxTokens = z.int().min(1).max(1_000_000);
const stop = z.union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(4)]).nullable();
/** A model name as a request gives it, in the body or in a path. */
export const modelField = z.string().min(1).max(256);

const sampling = {
  model: modelField,
  max_tokens: maxTokens.nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  n: z.literal(1, "only n = 1 is supported").nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullable().optional(),
  stop: stop.optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  seed: z.int().nullable().optional(),
  user: z.string().max(256).optional(),
};

const textPart = z.strictObject({ type: z.literal("text"), text: z.string() });

export const chatMessage = z.strictObject({
  role: z.enum(["system", "developer", "user", "assistant"]),
  content: z.union([z.string(), z.array(textPart).max(256)]),
  name: z.string().max(256).optional(),
});

export const chatCompletionRequest = z.strictObject({
  ...sampling,
  messages: z.array(chatMessage).min(1).max(4096),
  max_completion_tokens: maxTokens.nullable().optional(),
});

export const completionRequest = z.strictObject({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.string()).length(1, "only one prompt per request is supported")]),
  echo: z.literal(false, "echo is not supported").optional(),
});

/** Up to 2,048 inputs, OpenAI's own limit, so clients that batch to it are served unchanged. */
export const embeddingRequest = z.strictObject({
  model: modelField,
  input: z.union([z.string(), z.array(z.string()).min(1).max(2048)]),
  encoding_format: z.enum(["float", "base64"]).optional(),
  user: z.string().max(256).optional(),
});

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;
export type CompletionRequest = z.infer<typeof completionRequest>;
export type EmbeddingRequest = z.infer<typeof embeddingRequest>;
export type ChatMessage = z.infer<typeof chatMessage>;
