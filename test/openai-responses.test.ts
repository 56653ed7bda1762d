// The Responses API (/v1/responses) through the whole stack with the official openai client: the real
// gateway and the real node-agent running llama.cpp on the tiny stories model. Same keys, limits and
// metrics as /v1/chat/completions. Tool calls and text.format need the node's tool support; their
// translations are proven in test/wire-translation.test.ts.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeKey, policy } from "./support/gateway.ts";
import { type InferenceStack, startInferenceStack } from "./support/inference-stack.ts";

const ns = "wire-responses";
const key = makeKey(ns, "r");
const limited = makeKey(ns, "one-a-minute", { rateLimitPolicy: "one-a-minute" });
let stack: InferenceStack;

const client = (apiKey = key.secret) => new OpenAI({ apiKey, baseURL: `${stack.gateway.url}/v1`, maxRetries: 0 });

beforeAll(async () => {
  stack = await startInferenceStack(ns, {
    keys: [key, limited],
    policies: [policy(ns, "one-a-minute", { requestsPerMinute: 1, scope: "PerKey" })],
  });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

describe("the Responses API through the official openai client", () => {
  it("answers a response object with output text and real usage, counted like a chat completion", async () => {
    const before = await stack.tokensCounted("team-r", "completion");
    const { data, response } = await client()
      .responses.create({ model: "tiny-stories", input: "Once upon a time", max_output_tokens: 16 })
      .withResponse();
    expect(data.id).toMatch(/^resp_/);
    expect(data.object).toBe("response");
    expect(data.model).toBe("stories");
    expect(response.headers.get("x-pomona-model")).toBe("stories");
    expect(data.output[0]?.type).toBe("message");
    expect(data.output_text.length).toBeGreaterThan(0);
    expect(data.usage?.input_tokens).toBeGreaterThan(0);
    expect(data.usage?.output_tokens).toBeGreaterThan(0);
    expect(data.usage?.output_tokens).toBeLessThanOrEqual(16);
    expect(data.usage?.total_tokens).toBe((data.usage?.input_tokens ?? 0) + (data.usage?.output_tokens ?? 0));
    expect((data as unknown as { store: boolean }).store).toBe(false);
    expect(["completed", "incomplete"]).toContain(data.status);
    expect(await stack.tokensCounted("team-r", "completion")).toBe(before + data.usage!.output_tokens);
  });

  it("takes instructions and input items, an earlier answer replayed among them", async () => {
    const first = await client().responses.create({ model: "stories", input: "Tom had a dog", max_output_tokens: 8 });
    const second = await client().responses.create({
      model: "stories",
      instructions: "Tell a short story.",
      input: [
        { role: "user", content: [{ type: "input_text", text: "Tom had a dog" }] },
        ...(first.output as OpenAI.Responses.ResponseInputItem[]),
        { role: "user", content: "What was its name?" },
      ],
      max_output_tokens: 8,
      temperature: 0.2,
      top_p: 0.9,
    });
    expect(second.output_text.length).toBeGreaterThan(0);
    expect(second.instructions).toBe("Tell a short story.");
    expect(second.temperature).toBe(0.2);
  });

  it("says 'incomplete' when max_output_tokens cut the answer", async () => {
    const data = await client().responses.create({ model: "stories", input: "Once upon a time", max_output_tokens: 1 });
    expect(data.status).toBe("incomplete");
    expect(data.incomplete_details?.reason).toBe("max_output_tokens");
    expect(data.usage?.output_tokens).toBe(1);
  });

  it("streams the typed event sequence that client.responses.stream reads into its final response", async () => {
    const stream = client().responses.stream({ model: "stories", input: "Lily liked to play", max_output_tokens: 16 });
    const types: string[] = [];
    const sequence: number[] = [];
    let text = "";
    for await (const event of stream) {
      types.push(event.type);
      sequence.push(event.sequence_number);
      if (event.type === "response.output_text.delta") text += event.delta;
    }
    const final = await stream.finalResponse();
    expect(types.slice(0, 4)).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
    ]);
    expect(types).toContain("response.output_text.delta");
    expect(types.slice(-4, -1)).toEqual([
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
    ]);
    expect(["response.completed", "response.incomplete"]).toContain(types.at(-1));
    expect(sequence).toEqual(types.map((_, i) => i));
    expect(text.length).toBeGreaterThan(0);
    expect(final.output_text).toBe(text);
    expect(final.model).toBe("stories");
    expect(final.usage?.output_tokens).toBeGreaterThan(0);
  });

  it("refuses storage, previous responses and what Pomona cannot honour with a 400 naming the param", async () => {
    const refused = async (body: Record<string, unknown>) => {
      const err = await client()
        .responses.create({ model: "stories", input: "x", max_output_tokens: 4, ...body } as never)
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      return err as InstanceType<typeof OpenAI.BadRequestError>;
    };
    expect((await refused({ store: true })).param).toBe("store");
    expect((await refused({ store: true })).message).toMatch(/does not store responses/);
    expect((await refused({ previous_response_id: "resp_123" })).param).toBe("previous_response_id");
    expect((await refused({ reasoning: { effort: "low" } })).param).toBe("reasoning");
    expect((await refused({ tools: [{ type: "web_search" }] })).param).toBe("tools[0].type");
    expect(
      (await refused({ input: [{ role: "user", content: [{ type: "input_image", image_url: "x" }] }] })).param,
    ).toBe("input[0].content");
    // The pipeline's own check, named as the Responses API names it.
    expect((await refused({ max_output_tokens: 100_000 })).param).toBe("max_output_tokens");
    // store: false is what stateless clients send: accepted.
    const ok = await client().responses.create({ model: "stories", input: "x", max_output_tokens: 2, store: false });
    expect(ok.status).not.toBe("failed");
  });

  it("refuses a wrong key with the SDK's typed AuthenticationError", async () => {
    const err = await client("sk-pomona-wrong")
      .responses.create({ model: "stories", input: "x" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe("invalid_api_key");
  });

  it("applies the key's limits as on chat completions: 429 with Retry-After", async () => {
    await client(limited.secret).responses.create({ model: "stories", input: "x", max_output_tokens: 2 });
    const err = await client(limited.secret)
      .responses.create({ model: "stories", input: "x", max_output_tokens: 2 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const limit = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(limit.code).toBe("rate_limit_exceeded");
    expect(Number(limit.headers?.get("retry-after"))).toBeGreaterThan(0);
  });
});
