/**
 * The gateway's SSE relay (gateway/sse-relay.ts) on the node's own event text, without a network: token
 * chunks that already name the model pass unchanged and unparsed, everything that must be read (usage,
 * errors, another model's name) is, and the split into events does not depend on where TCP cuts the bytes.
 */
import { describe, expect, it } from "vitest";
import { SseRelay } from "../gateway/sse-relay.ts";

const model = "stories";
const token = (content: string, name = model) => ({
  id: "chatcmpl-1",
  object: "chat.completion.chunk",
  created: 1,
  model: name,
  choices: [{ index: 0, delta: { content }, logprobs: null, finish_reason: null }],
});
const usage = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 };
const usageChunk = { ...token("", model), choices: [], usage };
const event = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;

/** What the relay writes for these events, fed in pieces of `size` characters (all at once when absent). */
function relayed(events: string, options: { includeUsage?: boolean; size?: number } = {}) {
  const relay = new SseRelay(model, options.includeUsage ?? false);
  const size = options.size ?? events.length;
  let out = "";
  for (let at = 0; at < events.length; at += size) out += relay.push(events.slice(at, at + size));
  return { out, relay };
}

describe("SseRelay", () => {
  it("passes a token chunk naming the model on exactly as the node wrote it", () => {
    const text = event(token("Once")) + event(token(' "model":"other" and "usage"')) + event(token("usage"));
    const { out, relay } = relayed(text);
    expect(out).toBe(text);
    expect(relay.events).toBe(3);
    expect(relay.usage).toBeUndefined();
  });

  it("names the model that answered in a chunk that names another", () => {
    const { out } = relayed(event(token("Once", "stories-alias")));
    expect(out).toBe(event(token("Once")));
  });

  it("reads the usage chunk, and drops it when the client did not ask for usage", () => {
    const text = `${event(token("Once"))}${event(usageChunk)}data: [DONE]\n\n`;
    const dropped = relayed(text);
    expect(dropped.out).toBe(`${event(token("Once"))}data: [DONE]\n\n`);
    expect(dropped.relay.usage).toEqual(usage);
    expect(dropped.relay.done).toBe(true);
    const kept = relayed(text, { includeUsage: true });
    expect(kept.out).toBe(text);
    expect(kept.relay.usage).toEqual(usage);
  });

  it("gives the same output wherever TCP cuts the events, with either line ending", () => {
    const text = `: keep-alive\n\n${event(token("Once"))}${event(token("é 🍐"))}${event(usageChunk)}data: [DONE]\n\n`;
    const whole = relayed(text, { includeUsage: true }).out;
    expect(whole).toBe(text);
    for (const size of [1, 2, 3, 7, 50]) {
      expect(relayed(text, { includeUsage: true, size }).out).toBe(whole);
      expect(relayed(text.replaceAll("\n", "\r\n"), { includeUsage: true, size }).out).toBe(whole);
    }
  });

  it("reads an error chunk, and a chunk whose data spans several lines", () => {
    const error = { error: { message: "the replica unloaded", code: "replica_unloading" } };
    expect(relayed(event(error)).out).toBe(event({ ...error, model }));
    const lines = `data: {"id":"c","model":"x",\ndata: "choices":[]}\n\n`;
    expect(relayed(lines).out).toBe(event({ id: "c", model, choices: [] }));
  });

  it("ends the stream when an event grows past the bound", () => {
    const relay = new SseRelay(model, false, 64);
    expect(() => relay.push(`data: ${"x".repeat(100)}`)).toThrow(/event in the model server/);
  });
});
