// OpenAI's sampling and choice parameters through the whole stack, with the official openai client: the
// real node-agent (node-agent/main.ts) loads the fixture model from a ModelReplica in the real API server,
// and the real gateway in front of it serves the config published as the operator publishes it.
import type { LlamaModel } from "node-llama-cpp";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeKey, policy, type TestGateway } from "./support/gateway.ts";
import { type InferenceStack, startInferenceStack } from "./support/inference-stack.ts";
import { loadTinyModel } from "./support/tiny-model.ts";

const ns = "openai-sampling";
/** 100 tokens a minute: a request reserving prompt + n × max_tokens over that is refused at once. */
const tight = policy(ns, "tight", { scope: "PerKey", tokensPerMinute: 100 });
const key = makeKey(ns, "k");
const tightKey = makeKey(ns, "tight", { rateLimitPolicy: tight.name });
const PROMPT = "Once upon a time";

let stack: InferenceStack;
let gateway: TestGateway;
let model: LlamaModel;

const client = (k = key) => new OpenAI({ apiKey: k.secret, baseURL: `${gateway.url}/v1`, maxRetries: 0 });

/** Every token id whose text is `text` (the test's own copy of the fixture's vocabulary). */
function idsOf(text: string): number[] {
  const ids: number[] = [];
  const size = model.fileInfo.metadata.tokenizer!.ggml!.tokens!.length;
  for (let id = 0; id < size; id++) if (model.detokenize([id as never], true) === text) ids.push(id);
  return ids;
}

beforeAll(async () => {
  stack = await startInferenceStack(ns, { keys: [key, tightKey], policies: [tight], contextSize: 1024 });
  gateway = stack.gateway;
  model = await loadTinyModel();
}, 300_000);

afterAll(async () => {
  await model?.llama.dispose();
  await stack?.stop();
});

async function refusal(call: Promise<unknown>): Promise<{ status: number; param: string | null | undefined }> {
  const err = await call.then(
    () => {
      throw new Error("the request was accepted");
    },
    (e: unknown) => e,
  );
  if (!(err instanceof OpenAI.APIError)) throw err;
  return { status: err.status as number, param: (err.error as { param?: string | null } | undefined)?.param };
}

describe("n choices", () => {
  it("answers n = 3 with three choices and sums their tokens in usage, the prompt once", async () => {
    const one = await client().chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: PROMPT }],
      max_tokens: 6,
    });
    const three = await client().chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: PROMPT }],
      max_tokens: 6,
      n: 3,
      temperature: 1,
      seed: 7,
      logprobs: true,
    });
    expect(three.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    for (const c of three.choices) {
      expect(c.message.role).toBe("assistant");
      expect(["stop", "length"]).toContain(c.finish_reason);
    }
    // Each kept token has one logprob entry, so they count each choice's completion tokens.
    const perChoice = three.choices.map((c) => c.logprobs!.content!.length);
    expect(three.usage!.completion_tokens).toBe(perChoice.reduce((a, b) => a + b, 0));
    expect(three.usage!.prompt_tokens).toBe(one.usage!.prompt_tokens);
    // Seeded choices each get their own seed: at temperature 1 three identical stories would be a bug.
    expect(new Set(three.choices.map((c) => c.message.content)).size).toBeGreaterThan(1);
  });

  it("streams n = 3 as chunks carrying each choice's index, each choice finished, usage summed", async () => {
    const stream = await client().chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: PROMPT }],
      max_tokens: 6,
      n: 3,
      temperature: 1,
      stream: true,
      stream_options: { include_usage: true },
    });
    const text = ["", "", ""];
    const finished: (string | null)[] = [null, null, null];
    const roles: string[] = [];
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role) roles.push(`${c.index}:${c.delta.role}`);
        text[c.index] += c.delta.content ?? "";
        if (c.finish_reason) finished[c.index] = c.finish_reason;
      }
    }
    expect(roles).toEqual(["0:assistant", "1:assistant", "2:assistant"]);
    expect(finished.every((f) => f === "stop" || f === "length")).toBe(true);
    expect(text.every((t) => t.length > 0)).toBe(true);
    expect(usage!.completion_tokens).toBeGreaterThan(0);
    expect(usage!.completion_tokens).toBeLessThanOrEqual(18);
  });

  it("answers legacy completions with n = 2, streamed and not", async () => {
    const whole = await client().completions.create({ model: "stories", prompt: PROMPT, max_tokens: 5, n: 2 });
    expect(whole.choices.map((c) => c.index)).toEqual([0, 1]);
    // Temperature 0 by default: both choices are the same greedy story.
    expect(whole.choices[0]!.text).toBe(whole.choices[1]!.text);
    expect(whole.usage!.completion_tokens).toBe(10);

    const stream = await client().completions.create({
      model: "stories",
      prompt: PROMPT,
      max_tokens: 5,
      n: 2,
      stream: true,
    });
    const text = ["", ""];
    for await (const chunk of stream) for (const c of chunk.choices) text[c.index] += c.text;
    expect(text).toEqual([whole.choices[0]!.text, whole.choices[1]!.text]);
  });
});

describe("logprobs", () => {
  it("gives chat logprobs with top_logprobs sorted, holding the sampled token at temperature 0", async () => {
    const answer = await client().chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: PROMPT }],
      max_tokens: 12,
      temperature: 0,
      logprobs: true,
      top_logprobs: 5,
    });
    const content = answer.choices[0]!.logprobs!.content!;
    expect(content.length).toBe(answer.usage!.completion_tokens);
    expect(content.map((e) => e.token).join("")).toBe(answer.choices[0]!.message.content);
    for (const entry of content) {
      expect(entry.logprob).toBeLessThanOrEqual(0);
      expect(entry.bytes).toEqual([...Buffer.from(entry.token, "utf8")]);
      expect(entry.top_logprobs).toHaveLength(5);
      const lps = entry.top_logprobs.map((t) => t.logprob);
      expect([...lps].sort((a, b) => b - a)).toEqual(lps);
      expect(lps.every((lp) => lp <= 0)).toBe(true);
      // Greedy takes the most likely token.
      expect(entry.top_logprobs[0]!.token).toBe(entry.token);
      expect(entry.top_logprobs[0]!.logprob).toBe(entry.logprob);
    }
  });

  it("streams chat logprobs with each content chunk", async () => {
    const stream = await client().chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: PROMPT }],
      max_tokens: 8,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
      stream: true,
    });
    let text = "";
    let tokens = "";
    for await (const chunk of stream) {
      const c = chunk.choices[0];
      if (!c?.delta.content) continue;
      text += c.delta.content;
      for (const e of c.logprobs!.content!) {
        tokens += e.token;
        expect(e.top_logprobs.length).toBeLessThanOrEqual(2);
      }
    }
    expect(text.length).toBeGreaterThan(0);
    expect(tokens).toBe(text);
  });

  it("gives legacy completions logprobs: tokens, token_logprobs, top_logprobs and text_offset", async () => {
    const answer = await client().completions.create({
      model: "stories",
      prompt: PROMPT,
      max_tokens: 10,
      temperature: 0,
      logprobs: 3,
    });
    const lp = answer.choices[0]!.logprobs!;
    const n = answer.usage!.completion_tokens;
    expect(lp.tokens).toHaveLength(n);
    expect(lp.token_logprobs).toHaveLength(n);
    expect(lp.top_logprobs).toHaveLength(n);
    expect(lp.tokens!.join("")).toBe(answer.choices[0]!.text);
    let offset = PROMPT.length;
    for (let i = 0; i < n; i++) {
      expect(lp.text_offset![i]).toBe(offset);
      offset += lp.tokens![i]!.length;
      const top = lp.top_logprobs![i]!;
      expect(Object.keys(top).length).toBeLessThanOrEqual(4);
      expect(top[lp.tokens![i]!]).toBe(lp.token_logprobs![i]);
      const best = Math.max(...Object.values(top));
      expect(lp.token_logprobs![i]).toBe(best);
      expect(best).toBeLessThanOrEqual(0);
    }
  });
});

describe("stop with logprobs", () => {
  const ask = (stop?: string, n?: number) =>
    client().completions.create({
      model: "stories",
      prompt: PROMPT,
      max_tokens: 10,
      temperature: 0,
      logprobs: 2,
      stop,
      n,
    });
  /** A word from the middle, without its leading space: such a stop starts inside the token carrying it. */
  const wordOf = (plain: OpenAI.CompletionChoice) =>
    plain
      .logprobs!.tokens!.slice(3)
      .find((t) => t.trim().length > 1)!
      .trim();

  it("leaves a stop string's tokens out of the logprobs, as out of the text", async () => {
    const plain = (await ask()).choices[0]!;
    const word = wordOf(plain);
    expect(plain.text).toContain(word);
    for (const stop of [word, ` ${word}`]) {
      const answer = await ask(stop);
      const stopped = answer.choices[0]!;
      expect({ stop, text: stopped.text }).toEqual({ stop, text: plain.text.slice(0, plain.text.indexOf(stop)) });
      expect(stopped.finish_reason).toBe("stop");
      // The entries' texts joined are the answer; the space before `word` keeps its entry, cut there.
      expect(stopped.logprobs!.tokens!.join("")).toBe(stopped.text);
      expect(stopped.logprobs!.token_logprobs!.every((lp) => lp <= 0)).toBe(true);
      // Generation ends with the token that completes the stop; usage counts every token generated.
      const stopEnd = plain.text.indexOf(stop) + stop.length;
      let read = 0;
      const through = plain.logprobs!.tokens!.findIndex((t) => {
        read += t.length;
        return read >= stopEnd;
      });
      expect(answer.usage!.completion_tokens).toBe(through + 1);
    }
  });

  it("streams the same text and entries as the whole answer, and stops each of n choices", async () => {
    const plain = (await ask()).choices[0]!;
    const stop = ` ${wordOf(plain)}`;
    const whole = await ask(stop, 2);
    const stream = await client().completions.create({
      model: "stories",
      prompt: PROMPT,
      max_tokens: 10,
      temperature: 0,
      logprobs: 2,
      stop,
      n: 2,
      stream: true,
    });
    const text = ["", ""];
    const tokens: string[][] = [[], []];
    const finish: (string | null)[] = [null, null];
    for await (const chunk of stream)
      for (const c of chunk.choices) {
        text[c.index] += c.text;
        tokens[c.index]!.push(...(c.logprobs?.tokens ?? []));
        finish[c.index] = c.finish_reason ?? finish[c.index]!;
      }
    const expected = plain.text.slice(0, plain.text.indexOf(stop));
    for (const [i, c] of whole.choices.entries()) {
      expect(c.text).toBe(expected);
      expect(c.finish_reason).toBe("stop");
      expect(text[i]).toBe(expected);
      expect(tokens[i]).toEqual(c.logprobs!.tokens);
      expect(finish[i]).toBe("stop");
    }
  });
});

describe("logit_bias", () => {
  const greedy = async (logit_bias?: Record<string, number>) => {
    const answer = await client().completions.create({
      model: "stories",
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      logprobs: 0,
      logit_bias,
    });
    return answer.choices[0]!.logprobs!.tokens!;
  };

  it("-100 bans a token the model otherwise emits, 100 forces one", async () => {
    const plain = await greedy();
    const first = plain[0]!;
    const banned = idsOf(first);
    expect(banned.length).toBeGreaterThan(0);
    const withoutIt = await greedy(Object.fromEntries(banned.map((id) => [String(id), -100])));
    expect(withoutIt.length).toBeGreaterThan(0);
    expect(withoutIt).not.toContain(first);

    const forced = idsOf("a");
    expect(plain.every((t) => t === "a")).toBe(false);
    const allA = await greedy({ [String(forced[0])]: 100 });
    expect(allA).toHaveLength(8);
    expect(allA.every((t) => t === "a")).toBe(true);
  });
});

describe("what Pomona cannot honour is refused with its param", () => {
  const chat = (extra: Record<string, unknown>) =>
    client().chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: PROMPT }],
      max_tokens: 4,
      ...extra,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const completion = (extra: Record<string, unknown>) =>
    client().completions.create({
      model: "stories",
      prompt: PROMPT,
      max_tokens: 4,
      ...extra,
    } as OpenAI.CompletionCreateParamsNonStreaming);

  it.each([
    ["n above 8", () => chat({ n: 9 }), "n"],
    ["n of 0", () => chat({ n: 0 }), "n"],
    ["top_logprobs above 20", () => chat({ logprobs: true, top_logprobs: 21 }), "top_logprobs"],
    ["top_logprobs without logprobs", () => chat({ top_logprobs: 2 }), "top_logprobs"],
    ["legacy logprobs above 5", () => completion({ logprobs: 6 }), "logprobs"],
    ["a token id outside the vocabulary", () => chat({ logit_bias: { "99999": 5 } }), "logit_bias"],
    ["the end-of-text token", () => chat({ logit_bias: { [String(2)]: -100 } }), "logit_bias"],
    ["a bias above 100", () => chat({ logit_bias: { "100": 101 } }), "logit_bias[100]"],
    ["a key that is no token id", () => completion({ logit_bias: { a: 1 } }), "logit_bias.a"],
    ["a negative top_k", () => chat({ top_k: -1 }), "top_k"],
    ["min_p above 1", () => completion({ min_p: 2 }), "min_p"],
    ["echo", () => completion({ echo: true }), "echo"],
  ])("%s", async (_what, call, param) => {
    const { status, param: got } = await refusal(call());
    expect(status).toBe(400);
    expect(got).toBe(param);
  });

  it("reserves max_tokens for each of the n choices against the token limit", async () => {
    const ask = (n: number) =>
      client(tightKey).chat.completions.create({
        model: "stories",
        messages: [{ role: "user", content: "Hi" }],
        max_tokens: 40,
        n,
      });
    // 1 + 2 × 40 fits in 100 tokens a minute; 1 + 3 × 40 does not, whatever the answer would use.
    const { status } = await refusal(ask(3));
    expect(status).toBe(429);
    const two = await ask(2);
    expect(two.choices).toHaveLength(2);
  });
});
