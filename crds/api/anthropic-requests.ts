/**
 * The Anthropic Messages API request (`POST /v1/messages`) as Pomona serves it: a strict zod schema, so
 * what Pomona cannot honour (images, documents, thinking, server tools, …) is refused with a 400 naming it.
 * The gateway turns a valid request into a chat completion for the node (gateway/wire/anthropic-messages.ts);
 * nodes never see this shape.
 */
import { z } from "zod";
import { functionName, jsonSchema, modelField } from "./openai-requests.ts";

/**
 * Prompt caching is a hint: accepted and ignored, as Anthropic itself ignores it below its minimum
 * cacheable length. Coding tools send it on nearly every request.
 */
const cacheControl = z.strictObject({ type: z.literal("ephemeral"), ttl: z.enum(["5m", "1h"]).optional() }).nullable();

const textBlock = z.strictObject({
  type: z.literal("text"),
  text: z.string(),
  cache_control: cacheControl.optional(),
  citations: z.array(z.unknown()).max(0, "citations are not supported").nullable().optional(),
});

const toolUseBlock = z.strictObject({
  type: z.literal("tool_use"),
  id: z.string().min(1).max(256),
  name: functionName,
  input: z.record(z.string(), z.unknown()),
  cache_control: cacheControl.optional(),
});

const toolResultBlock = z.strictObject({
  type: z.literal("tool_result"),
  tool_use_id: z.string().min(1).max(256),
  content: z.union([z.string(), z.array(textBlock).max(256)]).optional(),
  is_error: z.boolean().optional(),
  cache_control: cacheControl.optional(),
});

const contentBlock = z.discriminatedUnion("type", [textBlock, toolUseBlock, toolResultBlock]);

export const anthropicMessage = z.strictObject({
  role: z.enum(["user", "assistant"]),
  content: z.union([z.string(), z.array(contentBlock).max(1024)], {
    error:
      "content is a string or a list of text, tool_use and tool_result blocks; images and documents are not supported",
  }),
});

export const anthropicTool = z.strictObject({
  type: z.literal("custom").optional(),
  name: functionName,
  description: z.string().max(16_384).optional(),
  input_schema: jsonSchema,
  cache_control: cacheControl.optional(),
});

const parallel = { disable_parallel_tool_use: z.boolean().optional() };
const toolChoice = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("auto"), ...parallel }),
  z.strictObject({ type: z.literal("any"), ...parallel }),
  z.strictObject({ type: z.literal("tool"), name: functionName, ...parallel }),
  z.strictObject({ type: z.literal("none") }),
]);

export const anthropicMessagesRequest = z.strictObject({
  model: modelField,
  max_tokens: z.int().min(1).max(1_000_000),
  messages: z.array(anthropicMessage).min(1).max(4096),
  system: z.union([z.string(), z.array(textBlock).max(256)]).optional(),
  tools: z.array(anthropicTool).max(128).optional(),
  tool_choice: toolChoice.optional(),
  /** Structured output: the answer follows the JSON schema (grammar-enforced on the node). */
  output_config: z
    .strictObject({
      format: z
        .strictObject({ type: z.literal("json_schema"), schema: jsonSchema })
        .nullable()
        .optional(),
    })
    .optional(),
  cache_control: cacheControl.optional(),
  stop_sequences: z.array(z.string().min(1).max(256)).max(4, "at most 4 stop sequences are supported").optional(),
  /** Sampling settings older clients send (the current SDK's types no longer name them). */
  temperature: z.number().min(0).max(1).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  /** llama.cpp's top-k, as on the chat routes: 0 = all tokens. */
  top_k: z.int().min(0).optional(),
  stream: z.boolean().optional(),
  /** Anthropic's abuse-tracking id: accepted and ignored, as `user` is on the OpenAI routes. */
  metadata: z.strictObject({ user_id: z.string().max(256).nullable().optional() }).optional(),
});

export type AnthropicMessagesRequest = z.infer<typeof anthropicMessagesRequest>;
