// The Anthropic Messages API (/v1/messages) through the whole stack with the official @anthropic-ai/sdk:
// the real gateway and the real node-agent running llama.cpp on the tiny stories model. The key goes in
// x-api-key (Anthropic's header) or as a bearer token; keys, limits and metrics are the chat route's.
// Tool use needs the node's tool support; its translation is proven in test/wire-translation.test.ts.
import Anthropic from "@anthropic-ai/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeKey, policy } from "./support/gateway.ts";
import { type InferenceStack, startInferenceStack } from "./support/inference-stack.ts";

const ns = "wire-messages";
const key = makeKey(ns, "m");
const limited = makeKey(ns, "one-a-minute", { rateLimitPolicy: "one-a-minute" });
let stack: InferenceStack;

/** The key in x-api-key only, as Claude Code and most Anthropic clients send it. */
const withApiKeyHeader = (secret = key.secret) =>
  new Anthropic({
    apiKey: null,
    authToken: null,
    baseURL: stack.gateway.url,
    defaultHeaders: { "x-api-key": secret },
    maxRetries: 0,
  });
/** The key as a bearer token (the SDK's authToken). */
const withBearer = (secret = key.secret) =>
  new Anthropic({ apiKey: null, authToken: secret, baseURL: stack.gateway.url, maxRetries: 0 });

beforeAll(async () => {
  stack = await startInferenceStack(ns, {
    keys: [key, limited],
    policies: [policy(ns, "one-a-minute", { requestsPerMinute: 1, scope: "PerKey" })],
  });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

describe("the Messages API through the official Anthropic client", () => {
  it("answers a message with text and real usage, the key in x-api-key, counted like a chat completion", async () => {
    const before = await stack.tokensCounted("team-m", "completion");
    const { data, response } = await withApiKeyHeader()
      .messages.create({
        model: "tiny-stories",
        max_tokens: 16,
        messages: [{ role: "user", content: "Once upon a time" }],
      })
      .withResponse();
    expect(data.id).toMatch(/^msg_/);
    expect(data.type).toBe("message");
    expect(data.role).toBe("assistant");
    expect(data.model).toBe("stories");
    expect(response.headers.get("x-pomona-model")).toBe("stories");
    expect(data.content[0]?.type).toBe("text");
    expect((data.content[0] as Anthropic.TextBlock).text.length).toBeGreaterThan(0);
    expect(["end_turn", "max_tokens"]).toContain(data.stop_reason);
    expect(data.usage.input_tokens).toBeGreaterThan(0);
    expect(data.usage.output_tokens).toBeGreaterThan(0);
    expect(data.usage.output_tokens).toBeLessThanOrEqual(16);
    expect(await stack.tokensCounted("team-m", "completion")).toBe(before + data.usage.output_tokens);
  });

  it("takes the key as a bearer token too, with system blocks, a conversation and sampling settings", async () => {
    const data = await withBearer().messages.create({
      model: "stories",
      max_tokens: 8,
      system: [{ type: "text", text: "Tell a short story.", cache_control: { type: "ephemeral" } }],
      messages: [
        { role: "user", content: "Tom had a dog." },
        { role: "assistant", content: [{ type: "text", text: "The dog was big." }] },
        { role: "user", content: [{ type: "text", text: "What did they do?" }] },
      ],
      stop_sequences: ["THE END"],
      metadata: { user_id: "someone" },
      // Older clients send sampling settings; the current SDK's types no longer name them.
      ...({ temperature: 0.3, top_p: 0.9, top_k: 40 } as object),
    });
    expect(data.content.length).toBeGreaterThan(0);
    expect(data.stop_sequence).toBeNull();
  });

  it("says max_tokens when the answer was cut", async () => {
    const data = await withApiKeyHeader().messages.create({
      model: "stories",
      max_tokens: 1,
      messages: [{ role: "user", content: "Once upon a time" }],
    });
    expect(data.stop_reason).toBe("max_tokens");
    expect(data.usage.output_tokens).toBe(1);
  });

  it("streams the event sequence that messages.stream reads into its final message", async () => {
    const stream = withApiKeyHeader().messages.stream({
      model: "stories",
      max_tokens: 16,
      messages: [{ role: "user", content: "Lily liked to play" }],
    });
    const types: string[] = [];
    let text = "";
    stream.on("streamEvent", (event) => types.push(event.type));
    stream.on("text", (delta) => {
      text += delta;
    });
    const final = await stream.finalMessage();
    expect(types.slice(0, 2)).toEqual(["message_start", "content_block_start"]);
    expect(types).toContain("content_block_delta");
    expect(types.slice(-3)).toEqual(["content_block_stop", "message_delta", "message_stop"]);
    expect(text.length).toBeGreaterThan(0);
    expect(final.content).toEqual([{ type: "text", text }]);
    expect(final.model).toBe("stories");
    expect(["end_turn", "max_tokens"]).toContain(final.stop_reason);
    // The node reports usage at the end; message_delta carries it, input tokens included.
    expect(final.usage.input_tokens).toBeGreaterThan(0);
    expect(final.usage.output_tokens).toBeGreaterThan(0);
  });

  it("answers errors in Anthropic's shape, as the SDK's typed errors", async () => {
    const missing = await withApiKeyHeader()
      .messages.create({ model: "stories", messages: [{ role: "user", content: "x" }] } as never)
      .catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(Anthropic.BadRequestError);
    expect((missing as InstanceType<typeof Anthropic.APIError>).error).toEqual({
      type: "error",
      error: { type: "invalid_request_error", message: expect.stringContaining("max_tokens") },
    });
    const image = await withApiKeyHeader()
      .messages.create({
        model: "stories",
        max_tokens: 4,
        messages: [{ role: "user", content: [{ type: "image", source: { type: "url", url: "https://x" } }] }],
      })
      .catch((e: unknown) => e);
    expect(image).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((image as Error).message)).toMatch(/images and documents are not supported/);
    const unknownModel = await withApiKeyHeader()
      .messages.create({ model: "claude-nonexistent", max_tokens: 4, messages: [{ role: "user", content: "x" }] })
      .catch((e: unknown) => e);
    expect(unknownModel).toBeInstanceOf(Anthropic.NotFoundError);
    expect((unknownModel as InstanceType<typeof Anthropic.APIError>).type).toBe("not_found_error");
  });

  it("refuses a wrong key with the SDK's AuthenticationError, in either header", async () => {
    for (const client of [withApiKeyHeader("sk-pomona-wrong"), withBearer("sk-pomona-wrong")]) {
      const err = await client.messages
        .create({ model: "stories", max_tokens: 4, messages: [{ role: "user", content: "x" }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.AuthenticationError);
      expect((err as InstanceType<typeof Anthropic.APIError>).type).toBe("authentication_error");
    }
    const none = await fetch(`${stack.gateway.url}/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "stories", max_tokens: 4, messages: [{ role: "user", content: "x" }] }),
    });
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({
      type: "error",
      error: { type: "authentication_error", message: expect.stringContaining("x-api-key") },
    });
  });

  it("applies the key's limits as on chat completions: 429 with Retry-After", async () => {
    const client = withApiKeyHeader(limited.secret);
    const body = { model: "stories", max_tokens: 2, messages: [{ role: "user" as const, content: "x" }] };
    await client.messages.create(body);
    const err = await client.messages.create(body).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    const limit = err as InstanceType<typeof Anthropic.RateLimitError>;
    expect(limit.type).toBe("rate_limit_error");
    expect(Number(limit.headers?.get("retry-after"))).toBeGreaterThan(0);
  });
});
