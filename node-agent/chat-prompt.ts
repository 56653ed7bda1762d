/**
 * Chat messages to a prompt. A model with a chat template in its GGUF gets it through node-llama-cpp's
 * Jinja wrapper, which also renders the tools, the assistant's earlier tool calls and their results the
 * template's own way; a model without one (plain text models such as the tiny test model) gets a simple
 * "Role: text" transcript ending with "Assistant:", and stops when it starts a new turn. `notes` (how to
 * call tools, the response format) go into the system message.
 */
import {
  type ChatHistoryItem,
  type ChatModelFunctionCall,
  type ChatModelFunctions,
  JinjaTemplateChatWrapper,
  type LlamaModel,
  type LlamaText,
} from "node-llama-cpp";
import type { ChatMessage, FunctionTool } from "../crds/api/openai-requests.ts";
import { parseArguments, toolCallText } from "./tool-calls.ts";

export interface ChatPrompt {
  /** Text with special tokens kept as tokens when it comes from a template. */
  prompt: string | LlamaText;
  /** Texts that end the assistant's turn besides the model's end-of-generation token. */
  stop: string[];
}

export interface ChatPromptOptions {
  tools?: FunctionTool[];
  /** Instructions for the system message (tool calling syntax, response format). */
  notes?: string[];
}

const plainRoles: Record<ChatMessage["role"], string> = {
  system: "System",
  developer: "System",
  user: "User",
  assistant: "Assistant",
  tool: "Tool",
};

export function messageText(m: ChatMessage): string {
  if (m.content == null) return "";
  return typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join("");
}

/** The messages with the notes joined to the first system message (or in a new one ahead of them). */
function withNotes(messages: ChatMessage[], notes: string[]): ChatMessage[] {
  if (notes.length === 0) return messages;
  const first = messages[0];
  if (first && (first.role === "system" || first.role === "developer"))
    return [{ role: first.role, content: [messageText(first), ...notes].join("\n\n") }, ...messages.slice(1)];
  return [{ role: "system", content: notes.join("\n\n") }, ...messages];
}

/** node-llama-cpp's chat history: tool results go into the call they answer, as the wrappers expect. */
function chatHistory(messages: ChatMessage[]): ChatHistoryItem[] {
  const results = new Map<string, string>();
  for (const m of messages) if (m.role === "tool") results.set(m.tool_call_id, messageText(m));
  const answered = new Set<string>();
  const history: ChatHistoryItem[] = [];
  for (const m of messages) {
    if (m.role === "assistant") {
      const calls: ChatModelFunctionCall[] = (m.tool_calls ?? []).map((c, i) => {
        answered.add(c.id);
        return {
          type: "functionCall",
          name: c.function.name,
          params: parseArguments(c.function.arguments),
          result: results.get(c.id) ?? "",
          startsNewChunk: i === 0,
        };
      });
      const text = messageText(m);
      history.push({ type: "model", response: [...(text ? [text] : []), ...calls] });
    } else if (m.role === "tool") {
      if (!answered.has(m.tool_call_id)) history.push({ type: "user", text: `Tool result: ${messageText(m)}` });
    } else if (m.role === "user") history.push({ type: "user", text: messageText(m) });
    else history.push({ type: "system", text: messageText(m) });
  }
  return history;
}

function plainLine(m: ChatMessage): string {
  if (m.role === "assistant" && m.tool_calls?.length)
    return `Assistant: ${messageText(m)}${toolCallText(m.tool_calls)}`;
  return `${plainRoles[m.role]}: ${messageText(m)}`;
}

export function chatPrompt(model: LlamaModel, messages: ChatMessage[], options: ChatPromptOptions = {}): ChatPrompt {
  const all = withNotes(messages, options.notes ?? []);
  const template = model.fileInfo.metadata?.tokenizer?.chat_template;
  if (typeof template === "string" && template.length > 0) {
    try {
      const wrapper = new JinjaTemplateChatWrapper({ template });
      const availableFunctions: ChatModelFunctions | undefined = options.tools?.length
        ? Object.fromEntries(
            options.tools.map((t) => [
              t.function.name,
              { description: t.function.description, params: t.function.parameters as never },
            ]),
          )
        : undefined;
      const { contextText, stopGenerationTriggers } = wrapper.generateContextState({
        chatHistory: [...chatHistory(all), { type: "model", response: [] }],
        availableFunctions,
        documentFunctionParams: true,
      });
      const stop = stopGenerationTriggers.flatMap((t) => {
        const text = t.toString();
        return text ? [text] : [];
      });
      return { prompt: contextText, stop };
    } catch {
      // A template node-llama-cpp cannot run falls back to the plain transcript below.
    }
  }
  const lines = all.map(plainLine);
  return { prompt: `${lines.join("\n")}\nAssistant:`, stop: ["\nUser:", "\nSystem:", "\nTool:"] };
}
