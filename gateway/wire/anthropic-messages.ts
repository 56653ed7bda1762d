/**
 * The Anthropic Messages API (`POST /v1/messages`) over the chat pipeline: a request becomes a chat
 * completion (system → a system message, tool_use blocks → an assistant message's tool_calls, tool_result
 * blocks → tool messages, tools → function tools, tool_choice any → required, output_config.format →
 * response_format), and the node's answer
 * becomes a `message` object, or the event sequence `client.messages.stream` reads. Errors have
 * Anthropic's shape `{type: "error", error: {type, message}}`.
 */
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParamsBase,
  ChatCompletionMessageParam,
  ChatCompletionMessageToolCall,
} from "openai/resources/chat/completions";
import type { AnthropicMessagesRequest } from "../../crds/api/anthropic-requests.ts";
import { contentText } from "../../crds/api/openai-requests.ts";
import { type GatewayError, UpstreamError } from "../errors.ts";
import {
  type ChatUsage,
  checkedChat,
  inRouteTerms,
  paramRenamer,
  type StreamTranslator,
  sseEvent,
  type WireFormat,
  wireId,
} from "./wire-format.ts";

/** Chat parameters as the Messages API names them. */
export const messagesParam = paramRenamer(
  {
    messages: "messages",
    max_completion_tokens: "max_tokens",
    stop: "stop_sequences",
    parallel_tool_calls: "tool_choice.disable_parallel_tool_use",
    response_format: "output_config.format",
  },
  [
    [/^tools\[(\d+)\]\.function\.parameters/, "tools[$1].input_schema"],
    [/^tools\[(\d+)\]\.function\./, "tools[$1]."],
    [/^tool_choice\.function\.name/, "tool_choice.name"],
    [/^response_format\.json_schema\./, "output_config.format."],
  ],
);

/** A chat request, with llama.cpp's top_k, which OpenAI's types do not name. */
type ChatRequest = ChatCompletionCreateParamsBase & { top_k?: number };

export function messagesToChat(body: AnthropicMessagesRequest): ChatRequest {
  const messages: ChatCompletionMessageParam[] = [];
  if (body.system !== undefined) {
    const system = typeof body.system === "string" ? body.system : body.system.map((b) => b.text).join("\n");
    if (system !== "") messages.push({ role: "system", content: system });
  }
  for (const message of body.messages) {
    if (typeof message.content === "string") {
      messages.push({ role: message.role, content: message.content });
      continue;
    }
    let text = "";
    const calls: ChatCompletionMessageToolCall[] = [];
    for (const block of message.content) {
      if (block.type === "text") text += block.text;
      else if (block.type === "tool_use") {
        calls.push({
          id: block.id,
          type: "function",
          function: { name: block.name, arguments: JSON.stringify(block.input) },
        });
      } else {
        // Tool results answer the assistant's calls just before, so they come before the user's own text.
        const result = block.content === undefined ? "" : contentText(block.content);
        messages.push({
          role: "tool",
          tool_call_id: block.tool_use_id,
          content: block.is_error ? `Error: ${result}` : result,
        });
      }
    }
    if (message.role === "assistant") {
      if (calls.length === 0) messages.push({ role: "assistant", content: text });
      else messages.push({ role: "assistant", content: text === "" ? null : text, tool_calls: calls });
    } else if (text !== "" || message.content.length === 0) {
      messages.push({ role: "user", content: text });
    }
  }
  const chat: ChatRequest = { model: body.model, messages, max_tokens: body.max_tokens };
  if (body.tools && body.tools.length > 0) {
    chat.tools = body.tools.map((t) => ({
      type: "function",
      function: {
        name: t.name,
        ...(t.description !== undefined && { description: t.description }),
        parameters: t.input_schema,
      },
    }));
  }
  const choice = body.tool_choice;
  if (choice) {
    chat.tool_choice =
      choice.type === "auto"
        ? "auto"
        : choice.type === "any"
          ? "required"
          : choice.type === "none"
            ? "none"
            : { type: "function", function: { name: choice.name } };
    if (choice.type !== "none" && choice.disable_parallel_tool_use) chat.parallel_tool_calls = false;
  }
  const format = body.output_config?.format;
  if (format)
    chat.response_format = {
      type: "json_schema",
      json_schema: { name: "output", schema: format.schema, strict: true },
    };
  if (body.stop_sequences && body.stop_sequences.length > 0) chat.stop = body.stop_sequences;
  if (body.temperature !== undefined) chat.temperature = body.temperature;
  if (body.top_p !== undefined) chat.top_p = body.top_p;
  // llama.cpp's top-k, which the chat routes take as an extension under the same name.
  if (body.top_k !== undefined) chat.top_k = body.top_k;
  if (body.stream) chat.stream = true;
  return chat;
}

type StopReason = "end_turn" | "max_tokens" | "tool_use" | "refusal";

/**
 * Chat completions do not say whether a stop sequence or the end of the turn stopped the model, so
 * `stop_sequence` is never reported: both are `end_turn`.
 */
function stopReason(finishReason: string | null | undefined): StopReason {
  if (finishReason === "length") return "max_tokens";
  if (finishReason === "tool_calls") return "tool_use";
  if (finishReason === "content_filter") return "refusal";
  return "end_turn";
}

function toolInput(call: { function: { arguments: string } }): Record<string, unknown> {
  try {
    const input: unknown = JSON.parse(call.function.arguments === "" ? "{}" : call.function.arguments);
    if (input && typeof input === "object" && !Array.isArray(input)) return input as Record<string, unknown>;
  } catch {
    // Reported below.
  }
  throw new UpstreamError("The model server's tool call arguments are not a JSON object.");
}

const messagesUsage = (usage: ChatUsage) => ({
  input_tokens: usage?.prompt_tokens ?? 0,
  output_tokens: usage?.completion_tokens ?? 0,
  cache_creation_input_tokens: 0,
  cache_read_input_tokens: 0,
});

type ContentBlock =
  | { type: "text"; text: string }
  | { type: "tool_use"; id: string; name: string; input: Record<string, unknown> };

export function chatToMessage(completion: ChatCompletion, id: string, model: string) {
  const choice = completion.choices?.[0];
  const content: ContentBlock[] = [];
  const text = choice?.message?.content ?? "";
  if (text !== "") content.push({ type: "text", text });
  for (const call of choice?.message?.tool_calls ?? []) {
    if (call.type !== "function") continue;
    content.push({ type: "tool_use", id: call.id, name: call.function.name, input: toolInput(call) });
  }
  return {
    id,
    type: "message" as const,
    role: "assistant" as const,
    content,
    model,
    stop_reason: stopReason(choice?.finish_reason),
    stop_sequence: null,
    usage: messagesUsage(completion.usage),
  };
}

/**
 * The node's chat chunks as Messages events: message_start, then per content block content_block_start,
 * content_block_delta (text_delta or input_json_delta) and content_block_stop — a block stops before the
 * next starts, as Anthropic streams them — then message_delta with the stop reason and the usage (input
 * tokens too: the node reports them only at the end, so message_start says 0), and message_stop.
 */
export class MessagesStream implements StreamTranslator {
  private readonly id: string;
  private readonly model: string;
  private started = false;
  private blocks = 0;
  /** The block open now: text, or the chat stream's tool call with this index. */
  private open: { kind: "text" } | { kind: "tool"; chatIndex: number } | undefined;
  private readonly closedTools = new Set<number>();
  private finishReason: string | null = null;
  private usage: ChatUsage;

  constructor(id: string, model: string) {
    this.id = id;
    this.model = model;
  }

  private start(): string {
    if (this.started) return "";
    this.started = true;
    const message = {
      id: this.id,
      type: "message",
      role: "assistant",
      content: [],
      model: this.model,
      stop_reason: null,
      stop_sequence: null,
      usage: messagesUsage(undefined),
    };
    return sseEvent("message_start", { type: "message_start", message });
  }

  private openBlock(block: Record<string, unknown>, open: NonNullable<MessagesStream["open"]>): string {
    let out = this.closeBlock();
    out += sseEvent("content_block_start", { type: "content_block_start", index: this.blocks, content_block: block });
    if (this.blocks === 0) out += sseEvent("ping", { type: "ping" });
    this.open = open;
    return out;
  }

  private closeBlock(): string {
    if (!this.open) return "";
    if (this.open.kind === "tool") this.closedTools.add(this.open.chatIndex);
    this.open = undefined;
    return sseEvent("content_block_stop", { type: "content_block_stop", index: this.blocks++ });
  }

  chunk(chunk: ChatCompletionChunk): string {
    let out = this.start();
    if (chunk.usage) this.usage = chunk.usage;
    const choice = chunk.choices?.[0];
    if (!choice) return out;
    const text = choice.delta?.content;
    if (text) {
      if (this.open?.kind !== "text") out += this.openBlock({ type: "text", text: "" }, { kind: "text" });
      out += sseEvent("content_block_delta", {
        type: "content_block_delta",
        index: this.blocks,
        delta: { type: "text_delta", text },
      });
    }
    for (const call of choice.delta?.tool_calls ?? []) {
      const current = this.open?.kind === "tool" && this.open.chatIndex === call.index;
      if (!current) {
        // Anthropic's blocks do not interleave: a call that resumes after another began cannot be placed.
        if (this.closedTools.has(call.index)) {
          throw new UpstreamError("The model server's stream interleaved tool calls.");
        }
        const block = { type: "tool_use", id: call.id ?? wireId("toolu"), name: call.function?.name ?? "", input: {} };
        out += this.openBlock(block, { kind: "tool", chatIndex: call.index });
      }
      const fragment = call.function?.arguments;
      if (fragment) {
        out += sseEvent("content_block_delta", {
          type: "content_block_delta",
          index: this.blocks,
          delta: { type: "input_json_delta", partial_json: fragment },
        });
      }
    }
    if (choice.finish_reason) this.finishReason = choice.finish_reason;
    return out;
  }

  end(): string {
    const usage = messagesUsage(this.usage);
    return (
      this.start() +
      this.closeBlock() +
      sseEvent("message_delta", {
        type: "message_delta",
        delta: { stop_reason: stopReason(this.finishReason), stop_sequence: null },
        usage: { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens },
      }) +
      sseEvent("message_stop", { type: "message_stop" })
    );
  }

  fail(error: GatewayError): string {
    return sseEvent("error", anthropicEnvelope(error));
  }
}

/** Anthropic's error types by status; the statuses stay Pomona's, so the SDK's typed errors match. */
export function anthropicErrorType(error: GatewayError): string {
  switch (error.status) {
    case 400:
    case 415:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 503:
      return "overloaded_error";
    case 504:
      return "timeout_error";
    default:
      return error.status < 500 ? "invalid_request_error" : "api_error";
  }
}

export function anthropicEnvelope(error: GatewayError) {
  // Anthropic's errors have no param: name it in the message when the message does not already.
  const { param, message: text } = inRouteTerms(error, messagesParam);
  const message = param && !text.includes(param) ? `${text} (${param})` : text;
  return { type: "error", error: { type: anthropicErrorType(error), message } };
}

export const messagesWire: WireFormat = {
  begin(raw) {
    const body = raw as AnthropicMessagesRequest;
    const chat = checkedChat(messagesToChat(body), messagesParam);
    const id = wireId("msg");
    return {
      chat,
      answer: (completion, model) => chatToMessage(completion, id, model),
      stream: (model) => new MessagesStream(id, model),
    };
  },
  envelope: anthropicEnvelope,
};
