/**
 * The OpenAI Responses API (`POST /v1/responses`) over the chat pipeline: a request becomes a chat
 * completion (instructions → a system message, input items → messages, flat function tools → chat tools,
 * text.format → response_format, max_output_tokens → max_completion_tokens), and the node's answer becomes
 * a `response` object, or the typed event sequence `client.responses.stream` reads. Nothing is stored.
 */
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParamsBase,
  ChatCompletionMessageParam,
  ChatCompletionMessageToolCall,
} from "openai/resources/chat/completions";
import { contentText } from "../../crds/api/openai-requests.ts";
import type { ResponsesRequest } from "../../crds/api/responses-requests.ts";
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

/** Chat parameters as the Responses API names them, for errors from the pipeline and the node. */
export const responsesParam = paramRenamer(
  {
    messages: "input",
    max_completion_tokens: "max_output_tokens",
    max_tokens: "max_output_tokens",
    response_format: "text.format",
  },
  [
    [/^tools\[(\d+)\]\.function\./, "tools[$1]."],
    [/^tool_choice\.function\.name/, "tool_choice.name"],
    [/^response_format\.json_schema\./, "text.format."],
  ],
);

export function responsesToChat(body: ResponsesRequest): ChatCompletionCreateParamsBase {
  const messages: ChatCompletionMessageParam[] = [];
  if (body.instructions) messages.push({ role: "system", content: body.instructions });
  for (const item of body.input) {
    if (item.type === "function_call") {
      const call: ChatCompletionMessageToolCall = {
        id: item.call_id,
        type: "function",
        function: { name: item.name, arguments: item.arguments },
      };
      // Calls of one turn, and the text before them, are one assistant message in a chat.
      const last = messages.at(-1);
      if (last?.role === "assistant") last.tool_calls = [...(last.tool_calls ?? []), call];
      else messages.push({ role: "assistant", content: null, tool_calls: [call] });
    } else if (item.type === "function_call_output") {
      messages.push({ role: "tool", tool_call_id: item.call_id, content: contentText(item.output) });
    } else {
      const content =
        typeof item.content === "string"
          ? item.content
          : item.content.map((p) => ({ type: "text" as const, text: p.text }));
      messages.push({ role: item.role, content } as ChatCompletionMessageParam);
    }
  }
  const chat: ChatCompletionCreateParamsBase = { model: body.model, messages };
  if (body.tools && body.tools.length > 0) {
    chat.tools = body.tools.map((t) => ({
      type: "function",
      function: {
        name: t.name,
        ...(t.description != null && { description: t.description }),
        ...(t.parameters != null && { parameters: t.parameters }),
        ...(t.strict != null && { strict: t.strict }),
      },
    }));
  }
  if (body.tool_choice !== undefined) {
    chat.tool_choice =
      typeof body.tool_choice === "string"
        ? body.tool_choice
        : { type: "function", function: { name: body.tool_choice.name } };
  }
  if (body.parallel_tool_calls != null) chat.parallel_tool_calls = body.parallel_tool_calls;
  const format = body.text?.format;
  if (format?.type === "json_object") chat.response_format = { type: "json_object" };
  if (format?.type === "json_schema") {
    chat.response_format = {
      type: "json_schema",
      json_schema: {
        name: format.name,
        schema: format.schema,
        ...(format.description !== undefined && { description: format.description }),
        ...(format.strict != null && { strict: format.strict }),
      },
    };
  }
  if (body.max_output_tokens != null) chat.max_completion_tokens = body.max_output_tokens;
  if (body.temperature != null) chat.temperature = body.temperature;
  if (body.top_p != null) chat.top_p = body.top_p;
  if (body.stream) chat.stream = true;
  return chat;
}

type Status = "in_progress" | "completed" | "incomplete" | "failed";

/** The response object without its output: what the request asked for, echoed as OpenAI does. */
function responseShell(body: ResponsesRequest, id: string, createdAt: number, model: string) {
  return {
    id,
    object: "response" as const,
    created_at: createdAt,
    status: "in_progress" as Status,
    background: false,
    error: null as { code: string; message: string } | null,
    incomplete_details: null as { reason: "max_output_tokens" | "content_filter" } | null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    metadata: body.metadata ?? {},
    model,
    output: [] as OutputItem[],
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: null,
    store: false,
    temperature: body.temperature ?? null,
    text: { format: body.text?.format ?? { type: "text" } },
    tool_choice: body.tool_choice ?? "auto",
    tools: (body.tools ?? []).map((t) => ({
      type: "function",
      name: t.name,
      description: t.description ?? null,
      parameters: t.parameters ?? null,
      strict: t.strict ?? null,
    })),
    top_p: body.top_p ?? null,
    truncation: "disabled",
    usage: null as ReturnType<typeof responsesUsage> | null,
  };
}

interface OutputTextPart {
  type: "output_text";
  text: string;
  annotations: never[];
  logprobs: never[];
}
interface MessageItem {
  id: string;
  type: "message";
  status: "in_progress" | "completed" | "incomplete";
  role: "assistant";
  content: OutputTextPart[];
}
interface FunctionCallItem {
  id: string;
  type: "function_call";
  status: "in_progress" | "completed" | "incomplete";
  call_id: string;
  name: string;
  arguments: string;
}
type OutputItem = MessageItem | FunctionCallItem;

const textPart = (text: string): OutputTextPart => ({ type: "output_text", text, annotations: [], logprobs: [] });

function responsesUsage(usage: ChatUsage) {
  const input = usage?.prompt_tokens ?? 0;
  const output = usage?.completion_tokens ?? 0;
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: usage?.total_tokens ?? input + output,
  };
}

/** The response's status from the node's finish reason: a cut-off answer is "incomplete", as OpenAI says. */
function outcome(finishReason: string | null | undefined): {
  status: "completed" | "incomplete";
  incomplete: { reason: "max_output_tokens" | "content_filter" } | null;
} {
  if (finishReason === "length") return { status: "incomplete", incomplete: { reason: "max_output_tokens" } };
  if (finishReason === "content_filter") return { status: "incomplete", incomplete: { reason: "content_filter" } };
  return { status: "completed", incomplete: null };
}

export function chatToResponse(
  completion: ChatCompletion,
  body: ResponsesRequest,
  id: string,
  createdAt: number,
  model: string,
) {
  const response = responseShell(body, id, createdAt, model);
  const choice = completion.choices?.[0];
  const { status, incomplete } = outcome(choice?.finish_reason);
  const text = choice?.message?.content ?? "";
  const calls = choice?.message?.tool_calls ?? [];
  if (text !== "" || calls.length === 0) {
    response.output.push({
      id: wireId("msg"),
      type: "message",
      status: status === "incomplete" ? "incomplete" : "completed",
      role: "assistant",
      content: [textPart(text)],
    });
  }
  for (const call of calls) {
    if (call.type !== "function") continue;
    response.output.push({
      id: wireId("fc"),
      type: "function_call",
      status: "completed",
      call_id: call.id,
      name: call.function.name,
      arguments: call.function.arguments,
    });
  }
  response.status = status;
  response.incomplete_details = incomplete;
  response.usage = responsesUsage(completion.usage);
  return response;
}

/**
 * The node's chat chunks as Responses events, each with its sequence number: response.created and
 * response.in_progress first; a message item (output_item.added, content_part.added, output_text.delta …)
 * for text; a function_call item (output_item.added, function_call_arguments.delta …) per tool call.
 * The message closes when a tool call begins; every item closes at the end, then response.completed
 * (response.incomplete when the answer was cut off) carries the whole response with its usage.
 */
export class ResponsesStream implements StreamTranslator {
  private seq = 0;
  private started = false;
  private readonly response: ReturnType<typeof responseShell>;
  private message: { item: MessageItem; index: number } | undefined;
  /** Function calls by their index in the chat stream. */
  private readonly calls = new Map<number, { item: FunctionCallItem; index: number }>();
  private finishReason: string | null = null;
  private usage: ChatUsage;

  constructor(response: ReturnType<typeof responseShell>) {
    this.response = response;
  }

  private event(type: string, data: Record<string, unknown>): string {
    return sseEvent(type, { type, sequence_number: this.seq++, ...data });
  }

  private start(): string {
    if (this.started) return "";
    this.started = true;
    return (
      this.event("response.created", { response: this.response }) +
      this.event("response.in_progress", { response: this.response })
    );
  }

  chunk(chunk: ChatCompletionChunk): string {
    let out = this.start();
    if (chunk.usage) this.usage = chunk.usage;
    const choice = chunk.choices?.[0];
    if (!choice) return out;
    const delta = choice.delta;
    if (delta?.content) out += this.text(delta.content);
    for (const call of delta?.tool_calls ?? []) out += this.toolCall(call);
    if (choice.finish_reason) this.finishReason = choice.finish_reason;
    return out;
  }

  private openMessage(): string {
    const item: MessageItem = {
      id: wireId("msg"),
      type: "message",
      status: "in_progress",
      role: "assistant",
      content: [],
    };
    const index = this.response.output.push(item) - 1;
    this.message = { item, index };
    const out =
      this.event("response.output_item.added", { output_index: index, item }) +
      this.event("response.content_part.added", {
        item_id: item.id,
        output_index: index,
        content_index: 0,
        part: textPart(""),
      });
    item.content.push(textPart(""));
    return out;
  }

  private text(delta: string): string {
    const out = this.message ? "" : this.openMessage();
    const { item, index } = this.message!;
    item.content[0]!.text += delta;
    return (
      out +
      this.event("response.output_text.delta", {
        item_id: item.id,
        output_index: index,
        content_index: 0,
        delta,
        logprobs: [],
      })
    );
  }

  private toolCall(call: NonNullable<ChatCompletionChunk.Choice.Delta["tool_calls"]>[number]): string {
    let out = "";
    let open = this.calls.get(call.index);
    if (!open) {
      out += this.closeMessage("completed");
      const item: FunctionCallItem = {
        id: wireId("fc"),
        type: "function_call",
        status: "in_progress",
        call_id: call.id ?? wireId("call"),
        name: call.function?.name ?? "",
        arguments: "",
      };
      if (this.calls.size >= 128) throw new UpstreamError("The model server's stream has too many tool calls.");
      open = { item, index: this.response.output.push(item) - 1 };
      this.calls.set(call.index, open);
      out += this.event("response.output_item.added", { output_index: open.index, item });
    }
    const fragment = call.function?.arguments;
    if (fragment) {
      open.item.arguments += fragment;
      out += this.event("response.function_call_arguments.delta", {
        item_id: open.item.id,
        output_index: open.index,
        delta: fragment,
      });
    }
    return out;
  }

  private closeMessage(status: "completed" | "incomplete"): string {
    if (!this.message) return "";
    const { item, index } = this.message;
    this.message = undefined;
    const part = item.content[0]!;
    item.status = status;
    const ids = { item_id: item.id, output_index: index, content_index: 0 };
    return (
      this.event("response.output_text.done", { ...ids, text: part.text, logprobs: [] }) +
      this.event("response.content_part.done", { ...ids, part }) +
      this.event("response.output_item.done", { output_index: index, item })
    );
  }

  end(): string {
    let out = this.start();
    const { status, incomplete } = outcome(this.finishReason);
    // An answer always has its message, even an empty one, unless it is only tool calls.
    if (this.response.output.length === 0) out += this.openMessage();
    out += this.closeMessage(status === "incomplete" ? "incomplete" : "completed");
    for (const { item, index } of this.calls.values()) {
      item.status = "completed";
      out += this.event("response.function_call_arguments.done", {
        item_id: item.id,
        output_index: index,
        name: item.name,
        arguments: item.arguments,
      });
      out += this.event("response.output_item.done", { output_index: index, item });
    }
    this.response.status = status;
    this.response.incomplete_details = incomplete;
    this.response.usage = responsesUsage(this.usage);
    return (
      out +
      this.event(status === "completed" ? "response.completed" : "response.incomplete", { response: this.response })
    );
  }

  fail(error: GatewayError): string {
    let out = this.start();
    out += this.event("error", { code: error.code, message: error.message, param: error.param });
    this.response.status = "failed";
    this.response.error = { code: "server_error", message: error.message };
    return out + this.event("response.failed", { response: this.response });
  }
}

export const responsesWire: WireFormat = {
  begin(raw) {
    const body = raw as ResponsesRequest;
    const chat = checkedChat(responsesToChat(body), responsesParam);
    const id = wireId("resp");
    const createdAt = Math.floor(Date.now() / 1000);
    return {
      chat,
      answer: (completion, model) => chatToResponse(completion, body, id, createdAt, model),
      stream: (model) => new ResponsesStream(responseShell(body, id, createdAt, model)),
    };
  },
  envelope(error) {
    const { param, message } = inRouteTerms(error, responsesParam);
    return { error: { message, type: error.type, param, code: error.code } };
  },
};
