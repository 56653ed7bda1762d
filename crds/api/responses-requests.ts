/**
 * The OpenAI Responses API request (`POST /v1/responses`) as Pomona serves it: a strict zod schema, so a
 * parameter Pomona cannot honour (hosted tools, reasoning, stored conversations, images, …) is named in a
 * 400 instead of being silently ignored. The gateway turns a valid request into a chat completion for the
 * node (gateway/wire/responses.ts); nodes never see this shape.
 */
import { z } from "zod";
import { functionName, jsonSchema, modelField } from "./openai-requests.ts";

const id = z.string().min(1).max(256);

const inputText = z.strictObject({ type: z.literal("input_text"), text: z.string() });
/** An earlier answer's text, as a client replays the output items it got back. */
const outputText = z.strictObject({
  type: z.literal("output_text"),
  text: z.string(),
  annotations: z.array(z.unknown()).max(256).optional(),
  logprobs: z.array(z.unknown()).max(4096).optional(),
});
const itemStatus = z.enum(["in_progress", "completed", "incomplete"]).optional();

const messageItem = z.strictObject({
  type: z.literal("message").optional(),
  id: id.optional(),
  status: itemStatus,
  role: z.enum(["user", "assistant", "system", "developer"]),
  content: z.union([z.string(), z.array(z.discriminatedUnion("type", [inputText, outputText])).max(256)], {
    error: "content is a string or a list of input_text parts; images, files and audio are not supported",
  }),
});

const functionCallItem = z.strictObject({
  type: z.literal("function_call"),
  id: id.optional(),
  status: itemStatus,
  call_id: id,
  name: functionName,
  arguments: z.string(),
});

const functionCallOutputItem = z.strictObject({
  type: z.literal("function_call_output"),
  id: id.optional(),
  status: itemStatus,
  call_id: id,
  output: z.union([z.string(), z.array(inputText).max(256)]),
});

export const responsesInputItem = z.discriminatedUnion("type", [messageItem, functionCallItem, functionCallOutputItem]);

/** Responses' flat function tool; hosted tools (web search, file search, …) are refused by the discriminator. */
export const responsesFunctionTool = z.strictObject({
  type: z.literal("function"),
  name: functionName,
  description: z.string().max(16_384).nullable().optional(),
  parameters: jsonSchema.nullable().optional(),
  strict: z.boolean().nullable().optional(),
});

const textFormat = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("text") }),
  z.strictObject({ type: z.literal("json_object") }),
  z.strictObject({
    type: z.literal("json_schema"),
    name: functionName,
    schema: jsonSchema,
    description: z.string().max(16_384).optional(),
    strict: z.boolean().nullable().optional(),
  }),
]);

const notStored =
  "Pomona does not store responses: leave store unset or false and send the whole conversation in input.";

export const responsesRequest = z.strictObject({
  model: modelField,
  /** A string is one user message; made one here so errors in items name the item's own field. */
  input: z.preprocess(
    (input) => (typeof input === "string" ? [{ role: "user", content: input }] : input),
    z.array(responsesInputItem).min(1).max(4096),
  ),
  instructions: z.string().nullable().optional(),
  tools: z.array(responsesFunctionTool).max(128).optional(),
  tool_choice: z
    .union([z.enum(["none", "auto", "required"]), z.strictObject({ type: z.literal("function"), name: functionName })])
    .optional(),
  parallel_tool_calls: z.boolean().nullable().optional(),
  text: z.strictObject({ format: textFormat.optional() }).optional(),
  max_output_tokens: z.int().min(1).max(1_000_000).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  /** Absent means not stored here (OpenAI's default is to store): Pomona keeps no responses. */
  store: z.literal(false, notStored).nullable().optional(),
  previous_response_id: z.null(notStored).optional(),
  /** Echoed in the response object, as OpenAI does; nothing is stored. */
  metadata: z
    .record(z.string().max(64), z.string().max(512))
    .refine((m) => Object.keys(m).length <= 16, "at most 16 metadata keys")
    .nullable()
    .optional(),
  truncation: z.literal("disabled", "only truncation 'disabled' is supported").nullable().optional(),
  user: z.string().max(256).optional(),
});

export type ResponsesRequest = z.infer<typeof responsesRequest>;
