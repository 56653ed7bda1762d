/**
 * What a chat request asks of the generation beyond sampling: the prompt (with the tools and the response
 * format described to the model), the grammar that holds the answer to a tool call or a JSON format, and
 * how the generated text becomes OpenAI's message, or stream chunks, with tool_calls.
 */
import type { LlamaGrammar, LlamaText } from "node-llama-cpp";
import type { ChatCompletionRequest } from "../crds/api/openai-requests.ts";
import { chatPrompt } from "./chat-prompt.ts";
import { invalid } from "./errors.ts";
import { SchemaRefusedError } from "./json-schema-grammar.ts";
import type { ReplicaEngine } from "./replica-engine.ts";
import { responseFormatGrammar, responseFormatNote } from "./structured-output.ts";
import {
  parseToolCalls,
  TOOL_CALL_PREFIX,
  type ToolCallOut,
  type ToolPlan,
  toolInstructions,
  toolPlan,
} from "./tool-calls.ts";

export interface ChatTurn {
  prompt: string | LlamaText;
  /** The template's end-of-turn texts. */
  stop: string[];
  grammar: LlamaGrammar | undefined;
  tools: ToolPlan | undefined;
}

/** Throws a 400 (AgentError) for tools or a format that cannot be enforced, before anything is admitted. */
export async function prepareChatTurn(engine: ReplicaEngine, body: ChatCompletionRequest): Promise<ChatTurn> {
  const format = body.response_format;
  const wantsTools = (body.tools?.length ?? 0) > 0 && body.tool_choice !== "none";
  const notes = [
    ...(body.tools?.length ? [toolInstructions(body.tools)] : []),
    ...[responseFormatNote(format)].filter((n): n is string => n !== undefined),
  ];
  const { prompt, stop } = chatPrompt(engine.model, body.messages, { notes });
  if (body.tool_choice !== undefined && body.tool_choice !== "none" && !body.tools?.length)
    throw invalid("tool_choice needs tools: the request declares none", "tool_choice");
  const constrained = wantsTools || (format !== undefined && format.type !== "text");
  if (!constrained) return { prompt, stop, grammar: undefined, tools: undefined };
  if (wantsTools && format !== undefined && format.type !== "text")
    throw invalid(
      "response_format cannot be combined with tools here: the answer is either tool calls or the format",
      "response_format",
    );
  if (body.stop != null)
    throw invalid("stop cannot be combined with tools or a JSON response_format: it could cut the JSON", "stop");
  const { room: left } = engine.measurePrompt(prompt);
  // The tokens the request may generate: max_tokens, within what the context leaves after the prompt.
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  const room = Math.min(maxTokens ?? left, left);
  try {
    if (wantsTools) {
      const tools = await toolPlan(engine.model.llama, body, room);
      return { prompt, stop, grammar: tools?.grammar, tools };
    }
    return { prompt, stop, grammar: await responseFormatGrammar(engine.model.llama, format, room), tools: undefined };
  } catch (err) {
    if (err instanceof SchemaRefusedError) throw invalid(err.message, err.param);
    // Whatever else translating, sizing or compiling a client's schema throws is still about that schema:
    // a 400 naming it, never a 5xx the gateway would count against the replica.
    const param = wantsTools ? "tools" : "response_format";
    throw invalid(`${param} could not be turned into a grammar: ${(err as Error).message}`, param);
  }
}

export interface ChatMessageOut {
  role: "assistant";
  content: string | null;
  refusal: null;
  tool_calls?: ToolCallOut[];
}

/** The answer's message and finish reason from the generated text. */
export function chatAnswer(
  turn: ChatTurn,
  text: string,
  finishReason: "stop" | "length",
): { message: ChatMessageOut; finishReason: "stop" | "length" | "tool_calls" } {
  const calls = turn.tools ? parseToolCalls(turn.tools, text) : undefined;
  if (calls)
    return {
      message: { role: "assistant", content: null, refusal: null, tool_calls: calls },
      finishReason: "tool_calls",
    };
  return { message: { role: "assistant", content: text, refusal: null }, finishReason };
}

/**
 * Streams a chat answer's deltas: text as it comes, except a tool call, which is held until it is
 * complete and then sent as OpenAI sends calls: per call, a chunk with its index, id, type and name (and
 * empty arguments), then its arguments. Under "auto" the first character tells a call ("<") from text.
 */
export class ChatDeltas {
  private held = "";
  private decided: "text" | "call" | undefined;
  private readonly turn: ChatTurn;
  private readonly send: (delta: object) => void;

  constructor(turn: ChatTurn, send: (delta: object) => void) {
    this.turn = turn;
    this.send = send;
    if (turn.tools?.mode === "required") this.decided = "call";
    if (!turn.tools) this.decided = "text";
  }

  text(chunk: string): void {
    if (this.decided === "text") {
      if (chunk) this.send({ content: chunk });
      return;
    }
    this.held += chunk;
    if (this.decided === "call" || this.held.trimStart() === "") return;
    this.decided = this.held.trimStart().startsWith(TOOL_CALL_PREFIX[0]!) ? "call" : "text";
    if (this.decided === "text") {
      this.send({ content: this.held });
      this.held = "";
    }
  }

  /** Sends the calls, if the answer was one; returns the finish reason. */
  finish(text: string, finishReason: "stop" | "length"): "stop" | "length" | "tool_calls" {
    const answer = chatAnswer(this.turn, text, finishReason);
    if (!answer.message.tool_calls) {
      if (this.held) this.send({ content: this.held });
      return answer.finishReason;
    }
    answer.message.tool_calls.forEach((call, index) => {
      this.send({
        tool_calls: [{ index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } }],
      });
      this.send({ tool_calls: [{ index, function: { arguments: call.function.arguments } }] });
    });
    return answer.finishReason;
  }
}
