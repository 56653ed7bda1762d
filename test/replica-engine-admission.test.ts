// A replica's engine (node-agent/replica-engine.ts) on real llama.cpp with the fixture model: a request that
// arrives while another sequence of the same context is generating starts at once on a free sequence, even
// when that sequence served an earlier request and its history has to be erased first. node-llama-cpp
// erases a sequence's history under the context's lock, which its decode loop holds for as long as any
// sequence keeps generating; erasing at admission made every newcomer wait for the whole running
// generation (the time-to-first-token outliers of bench/npm-start-stack.ts).
import { getLlama, type Llama } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ReplicaEngine } from "../node-agent/replica-engine.ts";
import { tinyModel } from "./support/node-agent.ts";
import { eventually } from "./support/processes.ts";

const PROMPT = "Once upon a time";

describe("admission while another sequence generates", () => {
  let llama: Llama;
  let engine: ReplicaEngine;

  /** Two long generations decoding together, each of their pieces of text counted; resolves once text flows. */
  async function twoLongGenerations(seed: number) {
    let count = 0;
    let flowing!: () => void;
    const started = new Promise<void>((resolve) => {
      flowing = resolve;
    });
    const generate = () =>
      engine.complete(
        PROMPT,
        { maxTokens: 1_000, temperature: 1, seed },
        {
          onText: () => {
            count++;
            flowing();
          },
        },
      );
    const long = Promise.all([generate(), generate()]);
    await started;
    return { long, pieces: () => count };
  }
  beforeAll(async () => {
    llama = await getLlama({ gpu: false, build: "never", progressLogs: false, maxThreads: 1 });
    engine = await ReplicaEngine.load(
      llama,
      tinyModel,
      { contextSize: 2048, parallelSequences: 3, threads: 1, embeddings: false },
      { maxThreads: 1, queueLimit: 4 },
    );
  });
  afterAll(async () => {
    await engine?.dispose();
    await llama?.dispose();
  });

  it("gives a used sequence a fresh history and its first token before the other generation ends", async () => {
    // Every sequence serves a request first, so each holds an earlier history.
    const first = await Promise.all(
      Array.from({ length: 3 }, () => engine.complete(PROMPT, { maxTokens: 8, temperature: 0 })),
    );
    // Two long generations decoding together, as a replica's sequences do under load; their pieces of text
    // are counted, so the newcomer's wait is measured in tokens generated meanwhile, not in time.
    const { long, pieces } = await twoLongGenerations(1);
    const before = pieces();
    let meanwhile: number | undefined;
    const short = await engine.complete(
      PROMPT,
      { maxTokens: 8, temperature: 0 },
      {
        onText: () => {
          meanwhile ??= pieces() - before;
        },
      },
    );
    const longResults = await long;
    for (const r of longResults) expect(r.completionTokens).toBeGreaterThan(200);
    // The newcomer joins the running batch within a few decode steps (each step is one piece of each long
    // generation), instead of after the long generations' hundreds of tokens.
    expect(meanwhile).toBeLessThan(20);
    // A fresh history: the same prompt gives the same answer as on a sequence used for the first time.
    expect(short.choices[0]!.text).toBe(first[0]!.choices[0]!.text);
    // Every sequence goes back to the pool once its history is erased.
    await eventually("every sequence free", async () => (engine.pool.busy === 0 ? true : undefined), 10_000);
  });

  it("starts a later choice of the same request without waiting for the other generations to end", async () => {
    const { long, pieces } = await twoLongGenerations(2);
    let firstEnded: number | undefined;
    let meanwhile: number | undefined;
    const result = await engine.complete(
      PROMPT,
      { maxTokens: 8, temperature: 0, choices: 2 },
      {
        onChoiceEnd: (choice) => {
          if (choice.index === 0) firstEnded = pieces();
        },
        onText: (_text, choice) => {
          if (choice === 1 && firstEnded !== undefined) meanwhile ??= pieces() - firstEnded;
        },
      },
    );
    const longResults = await long;
    for (const r of longResults) expect(r.completionTokens).toBeGreaterThan(200);
    expect(meanwhile).toBeLessThan(20);
    // The second choice starts from the prompt alone: at temperature 0 it is the first one again.
    expect(result.choices.map((c) => c.text)).toEqual([result.choices[0]!.text, result.choices[0]!.text]);
    expect(result.choices[0]!.completionTokens).toBeGreaterThan(0);
  });
});
