/**
 * The OpenAI request bodies the gateway accepts, as zod schemas: they
 * validate requests and type the handlers. Objects are strict, so a misspelt
 * or unsupported parameter is named in a 400 instead of being silently ignored.
 */
import { z } from "zod";

const MAX_TOKENS_CEILING = 1_000_000;
const modelField = z.string().min(1).max(256);
const maxTokens = z.int().min(1).max(MAX_TOKENS_CEILING);
const stop = z.union([z.string().max(256), z.array(z.string().max(256)).max(4)]).nullable();
const streamOptions = z.strictObject({ include_usage: z.boolean().optional() }).nullable();

const common = {
  model: modelField,
  max_tokens: maxTokens.nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  n: z.literal(1).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: streamOptions.optional(),
  stop: stop.optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  seed: z.int().nullable().optional(),
  user: z.string().max(256).optional(),
};

const textPart = z.strictObject({ type: z.literal("text"), text: z.string() });

// What the node-agent serves (node-agent/openai-schemas.ts): text messages, no tools.
export const chatMessage = z.strictObject({
  role: z.enum(["system", "developer", "user", "assistant"]),
  content: z.union([z.string(), z.array(textPart).max(256)]),
  name: z.string().max(256).optional(),
});

export const chatCompletionRequest = z.strictObject({
  ...common,
  messages: z.array(chatMessage).min(1).max(4096),
  max_completion_tokens: maxTokens.nullable().optional(),
});

export const completionRequest = z.strictObject({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()).length(1)]),
  echo: z.literal(false).optional(),
});

export const embeddingRequest = z.strictObject({
  model: modelField,
  input: z.union([z.string(), z.array(z.string()).min(1).max(2048)]),
  encoding_format: z.enum(["float", "base64"]).optional(),
  dimensions: z.int().min(1).max(65_536).optional(),
  user: z.string().max(256).optional(),
});

export const modelParams = z.strictObject({ model: z.string().min(1).max(256) });

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;
export type CompletionRequest = z.infer<typeof completionRequest>;
export type EmbeddingRequest = z.infer<typeof embeddingRequest>;

/** The text a request's prompt tokens come from, for the up-front estimate. */
export function promptText(body: ChatCompletionRequest | CompletionRequest | EmbeddingRequest): string {
  if ("messages" in body) {
    return body.messages
      .map((m) => (typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join("")))
      .join("\n");
  }
  if ("prompt" in body) return typeof body.prompt === "string" ? body.prompt : body.prompt.join("\n");
  return typeof body.input === "string" ? body.input : body.input.join("\n");
}

/** OpenAI names a parameter like `messages[0].content`. */
export function paramOf(path: readonly PropertyKey[]): string | null {
  if (path.length === 0) return null;
  let out = "";
  for (const part of path) out += typeof part === "number" ? `[${part}]` : out ? `.${String(part)}` : String(part);
  return out;
}
