/**
 * Chat messages to a prompt. A model with a chat template in its GGUF gets it through node-llama-cpp's
 * Jinja wrapper; a model without one (plain text models such as the tiny test model) gets a simple
 * "Role: text" transcript ending with "Assistant:", and stops when it starts a new turn.
 */
import { JinjaTemplateChatWrapper, type LlamaModel, type LlamaText } from "node-llama-cpp";
import type { ChatMessage } from "../crds/api/openai-requests.ts";

export interface ChatPrompt {
  /** Text with special tokens kept as tokens when it comes from a template. */
  prompt: string | LlamaText;
  /** Texts that end the assistant's turn besides the model's end-of-generation token. */
  stop: string[];
}

const plainRoles: Record<ChatMessage["role"], string> = {
  system: "System",
  developer: "System",
  user: "User",
  assistant: "Assistant",
};

export function messageText(m: ChatMessage): string {
  return typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join("");
}

export function chatPrompt(model: LlamaModel, messages: ChatMessage[]): ChatPrompt {
  const template = model.fileInfo.metadata?.tokenizer?.chat_template;
  if (typeof template === "string" && template.length > 0) {
    try {
      const wrapper = new JinjaTemplateChatWrapper({ template });
      const { contextText, stopGenerationTriggers } = wrapper.generateContextState({
        chatHistory: [
          ...messages.map((m) =>
            m.role === "assistant"
              ? { type: "model" as const, response: [messageText(m)] }
              : m.role === "user"
                ? { type: "user" as const, text: messageText(m) }
                : { type: "system" as const, text: messageText(m) },
          ),
          { type: "model", response: [] },
        ],
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
  const lines = messages.map((m) => `${plainRoles[m.role]}: ${messageText(m)}`);
  return { prompt: `${lines.join("\n")}\nAssistant:`, stop: ["\nUser:", "\nSystem:"] };
}
