// Faults of the node seen through /v1/responses and /v1/messages: each comes to the official client in the
// route's own error shape with the pipeline's status (a node's 400 stays a 400 naming the route's
// parameter, busy stays 503 with Retry-After, a failure after the start ends the stream with the format's
// error event). The node is the fake of test/support/fake-node.ts, since a fault is the point; real
// inference through these routes is in test/openai-responses.test.ts and test/anthropic-messages.test.ts.
import Anthropic from "@anthropic-ai/sdk";
import fc from "fast-check";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  makeKey,
  model,
  NODE_TOKEN,
  startGateway,
  type TestGateway,
} from "./support/gateway.ts";

const ns = "wire-faults";
const node = new FakeNode({ name: "mac-a", token: NODE_TOKEN, streamTokens: 3, completionTokens: 3 });
const key = makeKey(ns, "k");
let gateway: TestGateway;

const openai = () => new OpenAI({ apiKey: key.secret, baseURL: `${gateway.url}/v1`, maxRetries: 0 });
const anthropic = () =>
  new Anthropic({
    apiKey: null,
    authToken: null,
    baseURL: gateway.url,
    defaultHeaders: { "x-api-key": key.secret },
    maxRetries: 0,
  });
const messageBody = { model: "tiny", max_tokens: 8, messages: [{ role: "user" as const, content: "hi" }] };
const caught = (p: Promise<unknown>) =>
  p.then(
    () => new Error("accepted"),
    (e: unknown) => e,
  );

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  // No waiting in the line: a busy node is answered at once.
  gateway = await startGateway(ns, { queue: { timeoutMs: 0 } });
  const feed = new ConfigFeed(ns);
  await feed.publish({ models: [model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")] })], keys: [key] });
  await gateway.waitForVersion(feed.version);
});

afterEach(() => {
  node.mode = "ok";
});

afterAll(async () => {
  await gateway?.close();
  await node.kill();
});

describe("node faults in the route's own shape", () => {
  it("sends the node a chat completion and answers in the route's format", async () => {
    const response = await openai().responses.create({ model: "tiny", input: "hi", instructions: "Be brief." });
    expect(response.output_text).toBe("from mac-a");
    expect(node.seen.at(-1)).toMatchObject({
      path: "/v1/chat/completions",
      body: {
        model: "tiny",
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "hi" },
        ],
      },
    });
    const message = await anthropic().messages.create(messageBody);
    expect(message.content).toEqual([{ type: "text", text: "from mac-a" }]);
    expect(node.seen.at(-1)?.body).toEqual({
      model: "tiny",
      max_tokens: 8,
      messages: [{ role: "user", content: "hi" }],
    });
  });

  it("passes a node's 400 on as a 400 naming the route's parameter", async () => {
    node.mode = "reject";
    const responses = await caught(openai().responses.create({ model: "tiny", input: "hi" }));
    expect(responses).toBeInstanceOf(OpenAI.BadRequestError);
    expect((responses as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("input");
    const messages = await caught(anthropic().messages.create(messageBody));
    expect(messages).toBeInstanceOf(Anthropic.BadRequestError);
    expect((messages as InstanceType<typeof Anthropic.APIError>).error).toEqual({
      type: "error",
      error: { type: "invalid_request_error", message: expect.stringContaining("longer than the context") },
    });
  });

  it("answers a node that fails after admitting the request 502, and ends a broken stream with the format's error", async () => {
    node.mode = "late-error";
    const responses = await caught(openai().responses.create({ model: "tiny", input: "hi" }));
    expect((responses as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
    const messages = await caught(anthropic().messages.create(messageBody));
    expect((messages as InstanceType<typeof Anthropic.APIError>).status).toBe(502);
    expect((messages as InstanceType<typeof Anthropic.APIError>).type).toBe("api_error");

    const stream = openai().responses.stream({ model: "tiny", input: "hi" });
    await expect(stream.finalResponse()).rejects.toThrow(/ended the stream early/);
    const anthropicStream = anthropic().messages.stream(messageBody);
    const err = await caught(anthropicStream.finalMessage());
    expect(err).toBeInstanceOf(Anthropic.APIError);
    expect(String((err as Error).message)).toMatch(/ended the stream early/);
  });

  it("never answers 5xx to bodies near a valid request, and answers errors in the route's shape", async () => {
    // Each field is either plausible or any JSON at all, so the fuzz gets past the first check and into the
    // translations, not only the top-level schema.
    const near = (fields: Record<string, fc.Arbitrary<unknown>>, required: string[]) =>
      fc.record(
        Object.fromEntries(
          Object.entries(fields).map(([k, a]) => [k, fc.oneof({ arbitrary: a, weight: 3 }, fc.jsonValue())]),
        ),
        { requiredKeys: required },
      );
    const text = fc.string({ maxLength: 8 });
    const name = fc.string({ minLength: 1, maxLength: 8 });
    // Mostly what today's nodes serve, now and then what needs node tools (refused with a 400 until then).
    const mostly = <T, U>(served: fc.Arbitrary<T>, other: fc.Arbitrary<U>) =>
      fc.oneof({ arbitrary: served, weight: 6 }, { arbitrary: other, weight: 1 });
    const responsesBody = near(
      {
        input: mostly(
          fc.oneof(
            text,
            fc.array(fc.record({ role: fc.constantFrom("user", "assistant", "system", "developer"), content: text }), {
              minLength: 1,
              maxLength: 3,
            }),
          ),
          fc.array(
            fc.oneof(
              fc.record({ type: fc.constant("function_call"), call_id: name, name, arguments: text }),
              fc.record({ type: fc.constant("function_call_output"), call_id: name, output: text }),
            ),
            { maxLength: 3 },
          ),
        ),
        instructions: text,
        max_output_tokens: fc.integer({ min: 1, max: 600 }),
        text: mostly(
          fc.constant({ format: { type: "text" } }),
          fc.record({ format: fc.record({ type: fc.constantFrom("json_object", "json_schema") }) }),
        ),
        store: mostly(fc.constant(false), fc.constant(true)),
      },
      ["input"],
    );
    const messagesBody = near(
      {
        max_tokens: fc.integer({ min: 1, max: 600 }),
        messages: fc.array(
          fc.record({
            role: fc.constantFrom("user", "assistant"),
            content: mostly(
              fc.oneof(text, fc.array(fc.record({ type: fc.constant("text"), text }), { maxLength: 3 })),
              fc.array(
                fc.oneof(
                  fc.record({ type: fc.constant("tool_use"), id: name, name, input: fc.object() }),
                  fc.record({ type: fc.constant("tool_result"), tool_use_id: name, content: text }),
                ),
                { maxLength: 3 },
              ),
            ),
          }),
          { minLength: 1, maxLength: 3 },
        ),
        system: text,
        stop_sequences: fc.array(name, { maxLength: 5 }),
        temperature: fc.double({ min: 0, max: 1, noNaN: true }),
      },
      ["max_tokens", "messages"],
    );
    const post = async (path: string, body: unknown) => {
      const response = await fetch(`${gateway.url}/v1/${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key.secret}` },
        // A stream would be read the same way; the fuzz is about the request side.
        body: JSON.stringify({ ...(body as object), model: "tiny", stream: false }),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    // A fixed seed, so the share of bodies that get through is the same on every run.
    const settings = { numRuns: 150, seed: 14 };
    let served = 0;
    await fc.assert(
      fc.asyncProperty(responsesBody, async (body) => {
        const answer = await post("responses", body);
        expect([200, 400]).toContain(answer.status);
        if (answer.status !== 200) {
          expect(answer.body.error).toMatchObject({ type: "invalid_request_error", param: expect.any(String) });
          return;
        }
        served++;
        expect(answer.body.object).toBe("response");
      }),
      settings,
    );
    expect(served).toBeGreaterThan(10);
    served = 0;
    await fc.assert(
      fc.asyncProperty(messagesBody, async (body) => {
        const answer = await post("messages", body);
        expect([200, 400]).toContain(answer.status);
        if (answer.status !== 200) {
          expect(answer.body).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
          return;
        }
        served++;
        expect(answer.body.type).toBe("message");
      }),
      settings,
    );
    expect(served).toBeGreaterThan(10);
  });

  // Last: a busy answer leaves the endpoint alone for its Retry-After.
  it("answers a busy model 503 with Retry-After: overloaded_error on /v1/messages", async () => {
    node.mode = "busy";
    const responses = await caught(openai().responses.create({ model: "tiny", input: "hi" }));
    expect(responses).toBeInstanceOf(OpenAI.InternalServerError);
    expect((responses as InstanceType<typeof OpenAI.APIError>).status).toBe(503);
    expect((responses as InstanceType<typeof OpenAI.APIError>).code).toBe("no_replica_available");
    expect(Number((responses as InstanceType<typeof OpenAI.APIError>).headers?.get("retry-after"))).toBeGreaterThan(0);
    const messages = await caught(anthropic().messages.create(messageBody));
    expect((messages as InstanceType<typeof Anthropic.APIError>).status).toBe(503);
    expect((messages as InstanceType<typeof Anthropic.APIError>).type).toBe("overloaded_error");
    expect(Number((messages as InstanceType<typeof Anthropic.APIError>).headers?.get("retry-after"))).toBeGreaterThan(
      0,
    );
  });
});
