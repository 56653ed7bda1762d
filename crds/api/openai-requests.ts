/**
 * The OpenAI request bodies Pomona serves, as zod schemas: the gateway validates a client's request with
 * them and the node-agent validates what the gateway forwards, so both refuse and accept the same. Objects
 * are strict, so a parameter Pomona cannot honour (n > 1, logprobs, tools, dimensions, …) is named in a
 * 400 instead of being silently ignored. Chat takes text messages, tools (function calling) and
 * response_format (structured output); the JSON schemas inside them are checked further where the grammar
 * is made (node-agent/json-schema-grammar.ts), since only there is it known what a grammar can enforce.
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

const textContent = z.union([z.string(), z.array(textPart).max(256)]);
/** A JSON schema as a client sends it; what Pomona can enforce of it is decided where the grammar is made. */
const jsonSchema = z.record(z.string().max(256), z.unknown());
/** OpenAI's rule for function and schema names. */
const functionName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "must be 1 to 64 letters, digits, _ or -");

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
  tools: z.array(functionTool).max(128).optional(),
  tool_choice: toolChoice.optional(),
  parallel_tool_calls: z.boolean().optional(),
  response_format: responseFormat.optional(),
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
export type FunctionTool = z.infer<typeof functionTool>;
export type ToolChoice = z.infer<typeof toolChoice>;
export type ResponseFormat = z.infer<typeof responseFormat>;
