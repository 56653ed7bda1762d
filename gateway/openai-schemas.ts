/**
 * What the gateway adds to the OpenAI request schemas it shares with the node-agent
 * (crds/api/openai-requests.ts): the models route's parameters, the prompt text
 * for the token estimate, and OpenAI's way of naming a parameter.
 */
import { z } from "zod";
import {
  type ChatCompletionRequest,
  type CompletionRequest,
  type EmbeddingRequest,
  modelField,
} from "../crds/api/openai-requests.ts";

export const modelParams = z.strictObject({ model: modelField });

/**
 * The text a request's prompt tokens come from, for the up-front estimate: for chat, the messages with
 * their tool calls and tool results, and the tool definitions and response format schema, which the
 * node-agent also writes into the prompt.
 */
export function promptText(body: ChatCompletionRequest | CompletionRequest | EmbeddingRequest): string {
  if ("messages" in body) {
    const parts = body.messages.map((m) => {
      const text =
        m.content == null ? "" : typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join("");
      return "tool_calls" in m && m.tool_calls?.length ? text + JSON.stringify(m.tool_calls) : text;
    });
    if (body.tools?.length) parts.push(JSON.stringify(body.tools));
    if (body.response_format?.type === "json_schema") parts.push(JSON.stringify(body.response_format.json_schema));
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
