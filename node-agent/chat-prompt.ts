/**
 * Chat messages to a prompt. A model with a chat template in its GGUF gets it through node-llama-cpp's
 * Jinja wrapper; a model without one (plain text models such as the tiny test model) gets a simple
 * "Role: text" transcript ending with "Assistant:", and stops when it starts a new turn. `notes` (how to
 * call tools, the response format) go into the system message.
 *
 * Tools are described in one format only, Pomona's (tool-calls.ts), whichever the path: the `Functions:`
 * note lists them, the assistant's earlier calls are written as `<tool_call>[…]` text in its turn, and
 * tool results are text in a user turn. A template's own tool format is not used: the grammar holds the
 * answer to Pomona's format, so a model shown a second, different one would be told two things.
 */
import { type ChatHistoryItem, JinjaTemplateChatWrapper, type LlamaModel, type LlamaText } from "node-llama-cpp";
import { type ChatMessage, contentText } from "../crds/api/openai-requests.ts";
import { toolCallText } from "./tool-calls.ts";

export interface ChatPrompt {
  /** Text with special tokens kept as tokens when it comes from a template. */
  prompt: string | LlamaText;
  /** Texts that end the assistant's turn besides the model's end-of-generation token. */
  stop: string[];
}

export interface ChatPromptOptions {
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

const messageText = (m: ChatMessage): string => contentText(m.content);

/** The messages with the notes joined to the first system message (or in a new one ahead of them). */
function withNotes(messages: ChatMessage[], notes: string[]): ChatMessage[] {
  if (notes.length === 0) return messages;
  const first = messages[0];
  if (first && (first.role === "system" || first.role === "developer"))
    return [{ role: first.role, content: [messageText(first), ...notes].join("\n\n") }, ...messages.slice(1)];
  return [{ role: "system", content: notes.join("\n\n") }, ...messages];
}

/** The text of an assistant turn: its content, then its calls as the model writes them. */
function assistantText(m: Extract<ChatMessage, { role: "assistant" }>): string {
  return `${messageText(m)}${m.tool_calls?.length ? toolCallText(m.tool_calls) : ""}`;
}

/** The text of a tool result, naming the function whose call it answers when the history has it. */
function toolResultText(m: Extract<ChatMessage, { role: "tool" }>, names: Map<string, string>): string {
  const name = names.get(m.tool_call_id);
  return `Tool result${name ? ` (${name})` : ""}: ${messageText(m)}`;
}

/** node-llama-cpp's chat history, with calls and results as text (the one tool format, above). */
function chatHistory(messages: ChatMessage[]): ChatHistoryItem[] {
  const names = new Map<string, string>();
  const history: ChatHistoryItem[] = [];
  for (const m of messages) {
    if (m.role === "assistant") {
      for (const c of m.tool_calls ?? []) names.set(c.id, c.function.name);
      history.push({ type: "model", response: [assistantText(m)] });
    } else if (m.role === "tool") history.push({ type: "user", text: toolResultText(m, names) });
    else if (m.role === "user") history.push({ type: "user", text: messageText(m) });
    else history.push({ type: "system", text: messageText(m) });
  }
  return history;
}

function plainLine(m: ChatMessage): string {
  if (m.role === "assistant") return `Assistant: ${assistantText(m)}`;
  return `${plainRoles[m.role]}: ${messageText(m)}`;
}

export function chatPrompt(model: LlamaModel, messages: ChatMessage[], options: ChatPromptOptions = {}): ChatPrompt {
  const all = withNotes(messages, options.notes ?? []);
  const template = model.fileInfo.metadata?.tokenizer?.chat_template;
  if (typeof template === "string" && template.length > 0) {
    try {
      const wrapper = new JinjaTemplateChatWrapper({ template });
      const { contextText, stopGenerationTriggers } = wrapper.generateContextState({
        chatHistory: [...chatHistory(all), { type: "model", response: [] }],
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
