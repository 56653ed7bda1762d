// OpenAI's request parameters that Pomona supports, each shown to take effect through the whole stack: the
// official openai client, the gateway, the real node-agent (virtual mode) with real llama.cpp inference on the
// tiny stories model. docs/openai-compat.md names these tests; parameters Pomona refuses are checked here too.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeKey, type TestGateway } from "./support/gateway.ts";
import { type InferenceStack, startInferenceStack } from "./support/inference-stack.ts";

const ns = "gw-params";
const key = makeKey(ns, "k");
let stack: InferenceStack;
let gateway: TestGateway;

const client = () => new OpenAI({ apiKey: key.secret, baseURL: `${gateway.url}/v1`, maxRetries: 0 });
const user = (content: OpenAI.ChatCompletionUserMessageParam["content"]) => [{ role: "user" as const, content }];
/** A chat answer's text at temperature 0 unless the parameters say otherwise. */
async function chat(params: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>) {
  const answer = await client().chat.completions.create({
    model: "stories",
    messages: user("Once upon a time"),
    temperature: 0,
    max_tokens: 24,
    ...params,
  });
  return { text: answer.choices[0]?.message.content ?? "", answer };
}

/**
 * The first choice's text and finish reason of a greedy 60-token answer to "Once upon a time", as chat or
 * as a completion; a stream's chunks joined.
 */
async function answer(endpoint: "chat" | "completions", params: { stop?: string; stream?: boolean }) {
  const common = { model: "stories", temperature: 0, max_tokens: 60, stop: params.stop };
  let text = "";
  let finish: string | null | undefined;
  if (endpoint === "chat") {
    const base = { ...common, messages: user("Once upon a time") };
    if (!params.stream) {
      const a = await client().chat.completions.create(base);
      return { text: a.choices[0]?.message.content ?? "", finish: a.choices[0]?.finish_reason };
    }
    for await (const chunk of await client().chat.completions.create({ ...base, stream: true })) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    return { text, finish };
  }
  const base = { ...common, prompt: "Once upon a time" };
  if (!params.stream) {
    const a = await client().completions.create(base);
    return { text: a.choices[0]?.text ?? "", finish: a.choices[0]?.finish_reason };
  }
  for await (const chunk of await client().completions.create({ ...base, stream: true })) {
    text += chunk.choices[0]?.text ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  return { text, finish };
}

beforeAll(async () => {
  stack = await startInferenceStack(ns, { keys: [key], embeddings: true, sequenceContextSize: 256 });
  gateway = stack.gateway;
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

describe("chat completion parameters", () => {
  it("max_completion_tokens bounds the answer, and wins over max_tokens", async () => {
    const { answer } = await chat({ max_tokens: 40, max_completion_tokens: 3 });
    expect(answer.usage?.completion_tokens).toBeLessThanOrEqual(3);
    const same = await chat({ max_tokens: undefined, max_completion_tokens: 3 });
    const legacy = await chat({ max_tokens: 3 });
    expect(same.text).toBe(legacy.text);
  });

  it("stop ends the answer before the stop text", async () => {
    // Stops are matched on the text as the client reads it, spaces included (SentencePiece tokens carry
    // their leading space as "▁", which a token read alone loses). Chat answers "Anna, I'm ready to come
    // into the room. Anna was …"; a completion of "Once upon a time", ", there was a little girl named
    // Lily. She …".
    const cases = [
      { endpoint: "chat", stops: [".", " was", "room. Anna", " "] },
      { endpoint: "completions", stops: [" was", "Lily. She", " "] },
    ] as const;
    for (const { endpoint, stops } of cases) {
      const free = await answer(endpoint, {});
      for (const stop of stops) {
        expect(free.text).toContain(stop);
        const expected = { stop, text: free.text.slice(0, free.text.indexOf(stop)), finish: "stop" };
        expect({ stop, ...(await answer(endpoint, { stop })) }).toEqual(expected);
        // The stream's chunks never carry any part of the stop text: joined, they are the same answer.
        expect({ stop, ...(await answer(endpoint, { stop, stream: true })) }).toEqual(expected);
      }
    }
  });

  it("temperature 0 is greedy whatever the seed, and a small top_p keeps only the likeliest token", async () => {
    const greedy = await chat({ seed: 1 });
    expect((await chat({ seed: 2 })).text).toBe(greedy.text);
    expect((await chat({ temperature: 1, top_p: 0.01, seed: 3 })).text).toBe(greedy.text);
  });

  it("seed makes sampling repeatable", async () => {
    const seeded = () => chat({ temperature: 1, seed: 11, max_tokens: 20 });
    expect((await seeded()).text).toBe((await seeded()).text);
  });

  it("presence_penalty and frequency_penalty change what is sampled", async () => {
    const plain = await chat({ max_tokens: 60 });
    const penalised = await chat({ max_tokens: 60, presence_penalty: 2, frequency_penalty: 2 });
    expect(penalised.text).not.toBe(plain.text);
  });

  it("reads developer messages as system ones, and text parts as their joined text", async () => {
    const system = await chat({ messages: [{ role: "system", content: "Be brief." }, ...user("A cat")] });
    const developer = await chat({ messages: [{ role: "developer", content: "Be brief." }, ...user("A cat")] });
    expect(developer.text).toBe(system.text);
    const parts = await chat({
      messages: user([
        { type: "text", text: "Once upon" },
        { type: "text", text: " a time" },
      ]),
    });
    expect(parts.text).toBe((await chat({})).text);
  });

  it("accepts user, a message's name and n: 1, and answers as without them", async () => {
    const tagged = await chat({
      user: "user-1234",
      n: 1,
      messages: [{ role: "user", content: "Once upon a time", name: "ann" }],
    });
    expect(tagged.text).toBe((await chat({})).text);
  });
});

describe("completion and embedding parameters", () => {
  it("takes a one-element prompt list as the prompt, and echo: false", async () => {
    const ask = (prompt: string | string[]) =>
      client().completions.create({ model: "stories", prompt, max_tokens: 12, temperature: 0, echo: false });
    expect((await ask(["The dog"])).choices[0]?.text).toBe((await ask("The dog")).choices[0]?.text);
  });

  it("encodes embeddings as base64 float32 when asked", async () => {
    const floats = await client().embeddings.create({ model: "stories", input: "a cat", encoding_format: "float" });
    const response = await fetch(`${gateway.url}/v1/embeddings`, {
      method: "POST",
      headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "stories", input: "a cat", encoding_format: "base64", user: "user-1234" }),
    });
    const body = (await response.json()) as { data: { embedding: string }[] };
    const bytes = Buffer.from(body.data[0]!.embedding, "base64");
    const decoded = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
    expect(decoded).toEqual(floats.data[0]!.embedding.map((v) => Math.fround(v)));
  });
});

describe("parameters Pomona refuses", () => {
  it.each([
    ["/chat/completions", { audio: { voice: "alloy", format: "mp3" } }, "audio"],
    ["/chat/completions", { modalities: ["text", "audio"] }, "modalities"],
    ["/chat/completions", { prediction: { type: "content", content: "x" } }, "prediction"],
    ["/chat/completions", { store: true }, "store"],
    ["/chat/completions", { metadata: { a: "b" } }, "metadata"],
    ["/chat/completions", { service_tier: "auto" }, "service_tier"],
    ["/chat/completions", { reasoning_effort: "low" }, "reasoning_effort"],
    ["/chat/completions", { web_search_options: {} }, "web_search_options"],
    ["/chat/completions", { prompt_cache_key: "k" }, "prompt_cache_key"],
    ["/chat/completions", { safety_identifier: "s" }, "safety_identifier"],
    ["/chat/completions", { verbosity: "low" }, "verbosity"],
    ["/chat/completions", { functions: [{ name: "f", parameters: {} }] }, "functions"],
    [
      "/chat/completions",
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://x/y.png" } }] }] },
      "messages[0].content",
    ],
    [
      "/chat/completions",
      { stream: true, stream_options: { include_obfuscation: true } },
      "stream_options.include_obfuscation",
    ],
    ["/completions", { prompt: ["one", "two"] }, "prompt"],
    ["/completions", { prompt: [1, 2, 3] }, "prompt"],
    ["/completions", { suffix: "the end" }, "suffix"],
    ["/completions", { best_of: 2 }, "best_of"],
    ["/completions", { echo: true }, "echo"],
    ["/embeddings", { dimensions: 8 }, "dimensions"],
    ["/embeddings", { input: [1, 2, 3] }, "input"],
  ])("%s refuses %j with 400 naming %s", async (path, extra, param) => {
    const base =
      path === "/chat/completions"
        ? { messages: user("hi") }
        : path === "/completions"
          ? { prompt: "hi" }
          : { input: "hi" };
    const err = await client()
      .post(path, { body: { model: "stories", ...base, ...extra } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).param).toBe(param);
  });
});
