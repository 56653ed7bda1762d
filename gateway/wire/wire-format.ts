/**
 * A wire format other than chat completions that the gateway speaks to clients (the Responses API, the
 * Anthropic Messages API). Nodes speak only chat completions, so each such request is turned into one,
 * served by the same pipeline as /v1/chat/completions (keys, limits, routing, waiting line, breakers,
 * metrics), and its answer (JSON or SSE) is turned back into the route's own shape, errors included.
 * The translations are written against OpenAI's chat wire format (the `openai` package's types).
 */
import { randomBytes } from "node:crypto";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParamsBase,
} from "openai/resources/chat/completions";
import { type ChatCompletionRequest, chatCompletionRequest } from "../../crds/api/openai-requests.ts";
import { type GatewayError, InvalidRequestError } from "../errors.ts";
import { paramOf } from "../openai-schemas.ts";

/** Turns the node's chat stream into the route's events, for one request. */
export interface StreamTranslator {
  /** The route's events for one chunk of the node's stream (maybe ""); throws an UpstreamError on a chunk it cannot place. */
  chunk(chunk: ChatCompletionChunk): string;
  /** The route's closing events, once the node's stream ended. */
  end(): string;
  /** The route's error events, when the stream fails after it began. */
  fail(error: GatewayError): string;
}

/** One request of the route, turned into a chat completion for the node. */
export interface WireRequest {
  chat: ChatCompletionRequest;
  answer(completion: ChatCompletion, model: string): unknown;
  stream(model: string): StreamTranslator;
}

export interface WireFormat {
  /** Throws an InvalidRequestError (with the route's own param) when the request cannot be served. */
  begin(body: unknown): WireRequest;
  /** The route's error body for an error answered before any answer began. */
  envelope(error: GatewayError): unknown;
}

/** One server-sent event with a type, as both the Responses and the Messages APIs send them. */
export const sseEvent = (type: string, data: unknown): string => `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;

/** An id like OpenAI's and Anthropic's: a prefix and 24 random hex digits. */
export const wireId = (prefix: string): string => `${prefix}_${randomBytes(12).toString("hex")}`;

/**
 * The translated request, checked against the chat schema the node enforces (crds/api/openai-requests.ts),
 * so a request that needs something the model servers do not accept yet is refused before it is admitted,
 * naming the route's own parameter.
 */
export function checkedChat(
  chat: ChatCompletionCreateParamsBase,
  routeParam: (chatParam: string | null) => string | null,
): ChatCompletionRequest {
  const parsed = chatCompletionRequest.safeParse(chat);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  if (issue.code === "unrecognized_keys") {
    const param = routeParam(paramOf([...issue.path, issue.keys[0] ?? ""]));
    throw new InvalidRequestError(`The model servers do not accept '${param}' yet.`, param);
  }
  const param = routeParam(paramOf(issue.path));
  throw new InvalidRequestError(`The model servers cannot take '${param}': ${issue.message}`, param);
}

/**
 * Renames a chat parameter (`messages[2].content`) to the route's: by the first of `paths` that matches
 * the start of its path (`tools[0].function.parameters` → `tools[0].input_schema`), else by the first
 * name in its path.
 */
export function paramRenamer(names: Record<string, string>, paths: [RegExp, string][] = []) {
  return (param: string | null): string | null => {
    if (param === null) return null;
    for (const [pattern, replacement] of paths) if (pattern.test(param)) return param.replace(pattern, replacement);
    const head = /^[a-z_]+/.exec(param)?.[0] ?? param;
    const name = names[head];
    return name === undefined ? param : name;
  };
}

/** An error's param and message as the route names the param (the message named the chat parameter). */
export function inRouteTerms(
  error: GatewayError,
  routeParam: (chatParam: string | null) => string | null,
): { param: string | null; message: string } {
  const param = routeParam(error.param);
  if (error.param === null || param === error.param) return { param, message: error.message };
  return { param, message: error.message.replaceAll(error.param, param ?? "") };
}

/** Shared by both routes: the node's finish reason and usage. */
export type ChatUsage = ChatCompletion["usage"];
