/**
 * What the gateway adds to the OpenAI request schemas it shares with the node-agent
 * (crds/api/openai-requests.ts): the models route's parameters, the prompt text
 * for the token estimate, and OpenAI's way of naming a parameter.
 */
import { z } from "zod";
import {
  type ChatCompletionRequest,
  type CompletionRequest,
  contentText,
  type EmbeddingRequest,
  modelField,
} from "../crds/api/openai-requests.ts";

export const modelParams = z.strictObject({ model: modelField });

/**
 * The text a request's prompt tokens come from, for the up-front estimate: for chat, the messages with
 * their tool calls and tool results, and the tool definitions, which the node-agent writes into the
 * prompt. A response_format's schema is not in the prompt (the grammar holds the answer to it,
 * node-agent/structured-output.ts), so it is not counted.
 */
export function promptText(body: ChatCompletionRequest | CompletionRequest | EmbeddingRequest): string {
  if ("messages" in body) {
    const parts = body.messages.map((m) => {
      const text = contentText(m.content);
      return "tool_calls" in m && m.tool_calls?.length ? text + JSON.stringify(m.tool_calls) : text;
    });
    if (body.tools?.length) parts.push(JSON.stringify(body.tools));
    return parts.join("\n");
  }
  if ("prompt" in body) return typeof body.prompt === "string" ? body.prompt : body.prompt.join("\n");
  return typeof body.input === "string" ? body.input : body.input.join("\n");
}

/** OpenAI names a parameter like `messages[0].content`. */
export function paramOf(path: readonly PropertyKey[]): string | null {
  if (path.length === 0) return null;
  let out = "";
  for (const part of path) out += typeof part === "number" ? `[${part}]` : out ? `.${String(part)}` : String(part);
  return out;
}
