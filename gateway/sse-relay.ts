/**
 * Rewrites the node's server-sent events for the client: every chunk names
 * the model that answered, the usage chunk the gateway always asks for is
 * kept for the limiter and dropped when the client did not ask for it, and
 * `data: [DONE]` ends the stream. The node's keep-alive comments (sent while a
 * request waits in its queue) are passed on as one comment, so proxies between
 * the client and the gateway see a live connection. Events are split on blank
 * lines, so chunks cut anywhere by TCP are handled. An event longer than the
 * bound ends the stream with an error: a node that never sends a blank line
 * cannot make the gateway hold its output. With a translator (gateway/wire/), every chunk and the end
 * are written in the route's own event format instead.
 *
 * Only what needs reading is parsed: a token's chunk (one per generated token, the hot path) already names
 * the model the gateway asked the node for and holds no usage, so it goes on as the node wrote it; the
 * usage chunk, errors, a chunk naming another model and every chunk for a translator are parsed.
 */
import type { ChatCompletionChunk } from "openai/resources/chat/completions";
import { UpstreamError, UpstreamResponseTooLargeError } from "./errors.ts";
import type { StreamTranslator } from "./wire/wire-format.ts";

/** The blank line that ends an event, whichever line ends the node uses. */
const EVENT_END = /\r?\n\r?\n/g;
/** Longest event held while waiting for its end; a token's chunk is a few hundred bytes. */
export const MAX_EVENT_CHARS = 1024 * 1024;
export interface Usage {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
}

export class SseRelay {
  private buffer = "";
  private readonly modelName: string;
  /** How a chunk naming this model reads: `"model":"<name>"`. */
  private readonly modelField: string;
  private readonly includeUsage: boolean;
  usage: Usage | undefined;
  done = false;
  /** Chunks with generated content seen so far. */
  events = 0;

  private readonly maxEventChars: number;
  private readonly translator: StreamTranslator | undefined;

  constructor(
    modelName: string,
    includeUsage: boolean,
    maxEventChars = MAX_EVENT_CHARS,
    translator?: StreamTranslator,
  ) {
    this.modelName = modelName;
    this.modelField = `"model":${JSON.stringify(modelName)}`;
    this.includeUsage = includeUsage;
    this.maxEventChars = maxEventChars;
    this.translator = translator;
  }

  /** Feed bytes from the node; returns what to write to the client (maybe ""); throws on an event over the bound. */
  push(chunk: string): string {
    const buffer = this.buffer + chunk;
    let out = "";
    let from = 0;
    for (;;) {
      EVENT_END.lastIndex = from;
      const end = EVENT_END.exec(buffer);
      if (!end) break;
      out += this.rewrite(buffer.slice(from, end.index));
      from = end.index + end[0].length;
    }
    this.buffer = from === 0 ? buffer : buffer.slice(from);
    if (this.buffer.length > this.maxEventChars) {
      this.buffer = "";
      throw new UpstreamResponseTooLargeError("stream event", this.maxEventChars);
    }
    return out;
  }

  private rewrite(event: string): string {
    // A node writes each event as one `data:` line; anything else is read line by line.
    const data =
      event.startsWith("data:") && !event.includes("\n")
        ? event.slice(5).trimStart()
        : event
            .split(/\r?\n/)
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart())
            .join("\n");
    if (data === "") return event.startsWith(":") ? ": keep-alive\n\n" : "";
    if (data === "[DONE]") {
      this.done = true;
      return this.translator ? this.translator.end() : "data: [DONE]\n\n";
    }
    // A token's chunk that already names the model and cannot hold usage or an error goes on as the node
    // wrote it: parsing and re-serialising it would give the same text. A quote inside a JSON string is
    // escaped, so `"model":"<name>"` and `"usage"` can only be the text of a key and its value (or, for
    // "usage", of a whole string value, which only sends that chunk the long way).
    if (!this.translator && data.includes(this.modelField) && !data.includes('"usage"')) {
      this.events++;
      return `data: ${data}\n\n`;
    }
    let chunk: { model?: string; usage?: Usage | null; choices?: unknown[]; error?: { code?: unknown } };
    try {
      chunk = JSON.parse(data);
    } catch {
      return "";
    }
    if (chunk.usage) this.usage = chunk.usage;
    if (this.translator) {
      // The node's failure after its headers (docs/node-contract.md §2), told in the route's own format.
      if (chunk.error) {
        const code = typeof chunk.error.code === "string" ? chunk.error.code.slice(0, 64) : "no code";
        throw new UpstreamError(`The model server failed while answering (${code}).`);
      }
      if (chunk.choices && chunk.choices.length > 0) this.events++;
      return this.translator.chunk(chunk as ChatCompletionChunk);
    }
    if (!this.includeUsage && chunk.usage !== undefined) {
      if (!chunk.choices || chunk.choices.length === 0) return "";
      delete chunk.usage;
    }
    this.events++;
    chunk.model = this.modelName;
    return `data: ${JSON.stringify(chunk)}\n\n`;
  }
}

export const tokensOf = (usage: Usage | undefined): number | undefined => {
  if (!usage) return undefined;
  if (typeof usage.total_tokens === "number") return usage.total_tokens;
  if (typeof usage.prompt_tokens === "number") return usage.prompt_tokens + (usage.completion_tokens ?? 0);
  return undefined;
};
