/**
 * The OpenAI request bodies Pomona serves, as zod schemas: the gateway validates a client's request with
 * them and the node-agent validates what the gateway forwards, so both refuse and accept the same. Objects
 * are strict, so a parameter Pomona cannot honour (dimensions, …) is named in a 400 instead of being
 * silently ignored. Chat takes text messages, tools (function calling) and response_format (structured
 * output); the JSON schemas inside them are checked further where the grammar is made
 * (node-agent/json-schema-grammar.ts), since only there is it known what a grammar can enforce.
 * `top_k` and `min_p` are llama.cpp extensions.
 */
import { z } from "zod";

/** Most choices one request may ask for (`n`). */
export const MAX_CHOICES = 8;
/** Most tokens one request may bias, OpenAI's own limit. */
export const MAX_LOGIT_BIAS = 300;
/** Most alternatives per token: 20 for chat (`top_logprobs`), 5 for legacy completions (`logprobs`), as OpenAI. */
export const MAX_TOP_LOGPROBS = 20;
export const MAX_LEGACY_LOGPROBS = 5;

const maxTokens = z.int().min(1).max(1_000_000);
const stop = z.union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(4)]).nullable();
/** A model name as a request gives it, in the body or in a path. */
export const modelField = z.string().min(1).max(256);

const sampling = {
  model: modelField,
  max_tokens: maxTokens.nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  /** Choices per request, generated one after another on one sequence (docs/decisions.md). */
  n: z.int().min(1).max(MAX_CHOICES, `n must be at most ${MAX_CHOICES}`).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullable().optional(),
  stop: stop.optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  seed: z.int().nullable().optional(),
  user: z.string().max(256).optional(),
  /** Token id (as a string, as JSON keys are) → a bias added to its logit; checked against the vocabulary by the node. */
  logit_bias: z
    .record(z.string().regex(/^\d{1,9}$/, "logit_bias keys are token ids"), z.number().min(-100).max(100))
    .refine((b) => Object.keys(b).length <= MAX_LOGIT_BIAS, `at most ${MAX_LOGIT_BIAS} tokens may be biased`)
    .nullable()
    .optional(),
  /** llama.cpp extensions: sample among the k most likely tokens (0 = all), and drop tokens below min_p × the top one. */
  top_k: z.int().min(0).max(100_000).nullable().optional(),
  min_p: z.number().min(0).max(1).nullable().optional(),
};

const textPart = z.strictObject({ type: z.literal("text"), text: z.string() });

const textContent = z.union([z.string(), z.array(textPart).max(256)]);
/**
 * A JSON schema as a client sends it, on every wire format (chat, Responses, Messages); what Pomona can
 * enforce of it is decided where the grammar is made (node-agent/json-schema-grammar.ts).
 */
export const jsonSchema = z.record(z.string().max(256), z.unknown());
/** OpenAI's rule for function and schema names; the other wire formats' tool names follow it too. */
export const functionName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "must be 1 to 64 letters, digits, _ or -");

export const toolCall = z.strictObject({
  id: z.string().min(1).max(256),
  type: z.literal("function"),
  function: z.strictObject({
    name: functionName,
    arguments: z.string().max(1_000_000),
    // Added by the openai SDK's parse and stream helpers to the messages they return, which clients send
    // back in the history; OpenAI ignores it, and so does Pomona.
    parsed_arguments: z.unknown().optional(),
  }),
});

export const chatMessage = z.discriminatedUnion("role", [
  z.strictObject({
    role: z.enum(["system", "developer", "user"]),
    content: textContent,
    name: z.string().max(256).optional(),
  }),
  z.strictObject({
    role: z.literal("assistant"),
    // null (or absent) when the turn is only tool calls, as OpenAI's own answers are.
    content: textContent.nullable().optional(),
    name: z.string().max(256).optional(),
    refusal: z.string().max(100_000).nullable().optional(),
    tool_calls: z.array(toolCall).max(128).optional(),
    // Output fields of an answer (the SDK's helpers add `parsed`) sent back in the history: ignored.
    parsed: z.unknown().optional(),
    annotations: z.array(z.unknown()).max(256).optional(),
  }),
  z.strictObject({ role: z.literal("tool"), content: textContent, tool_call_id: z.string().min(1).max(256) }),
]);

export const functionTool = z.strictObject({
  type: z.literal("function"),
  function: z.strictObject({
    name: functionName,
    description: z.string().max(100_000).optional(),
    parameters: jsonSchema.optional(),
    strict: z.boolean().nullable().optional(),
  }),
});

export const toolChoice = z.union([
  z.enum(["none", "auto", "required"]),
  z.strictObject({ type: z.literal("function"), function: z.strictObject({ name: functionName }) }),
]);

export const responseFormat = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("text") }),
  z.strictObject({ type: z.literal("json_object") }),
  z.strictObject({
    type: z.literal("json_schema"),
    json_schema: z.strictObject({
      name: functionName,
      description: z.string().max(100_000).optional(),
      schema: jsonSchema.optional(),
      strict: z.boolean().nullable().optional(),
    }),
  }),
]);

export const chatCompletionRequest = z.strictObject({
  ...sampling,
  messages: z.array(chatMessage).min(1).max(4096),
  max_completion_tokens: maxTokens.nullable().optional(),
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).nullable().optional(),
  tools: z.array(functionTool).max(128).optional(),
  tool_choice: toolChoice.optional(),
  parallel_tool_calls: z.boolean().optional(),
  response_format: responseFormat.optional(),
});

export const completionRequest = z.strictObject({
  ...sampling,
  prompt: z.union([z.string(), z.array(z.string()).length(1, "only one prompt per request is supported")]),
  echo: z.literal(false, "echo is not supported").optional(),
  /** The legacy shape: the log probability of each token and of the `logprobs` most likely alternatives. */
  logprobs: z.int().min(0).max(MAX_LEGACY_LOGPROBS).nullable().optional(),
});

/** Up to 2,048 inputs, OpenAI's own limit, so clients that batch to it are served unchanged. */
export const embeddingRequest = z.strictObject({
  model: modelField,
  input: z.union([z.string(), z.array(z.string()).min(1).max(2048)]),
  encoding_format: z.enum(["float", "base64"]).optional(),
  user: z.string().max(256).optional(),
});

/**
 * A message's text: its text parts joined, as chat templates take one string per message. The one joiner
 * for every wire format, on the gateway and the node-agent.
 */
export function contentText(content: string | readonly { text: string }[] | null | undefined): string {
  if (content == null) return "";
  return typeof content === "string" ? content : content.map((p) => p.text).join("");
}

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;
export type CompletionRequest = z.infer<typeof completionRequest>;
export type EmbeddingRequest = z.infer<typeof embeddingRequest>;
export type ChatMessage = z.infer<typeof chatMessage>;

/**
 * The cross-field rules of the sampling parameters, checked by the gateway and the node-agent alike (kept
 * out of the schemas so they stay plain objects that other schemas may extend). Returns the refusal, or
 * undefined when the request is fine.
 */
export function samplingRefusal(
  body: ChatCompletionRequest | CompletionRequest,
): { message: string; param: string } | undefined {
  if ("messages" in body && body.top_logprobs != null && body.logprobs !== true)
    return { message: "logprobs must be set to true when top_logprobs is used.", param: "top_logprobs" };
  // A tool call is held back until it is complete and sent as tool_calls deltas, which carry no logprobs:
  // refused rather than answered without them when streamed.
  if ("messages" in body && body.logprobs === true && body.tools?.length && body.tool_choice !== "none")
    return { message: "logprobs cannot be combined with tools (unless tool_choice is none).", param: "logprobs" };
  return undefined;
}
export type FunctionTool = z.infer<typeof functionTool>;
export type ResponseFormat = z.infer<typeof responseFormat>;
