// Log probabilities of generated tokens (node-agent/token-probabilities.ts) as a plain class, on the
// fixture model's tokenizer: what is held between sampling and keeping stays bounded by top_logprobs,
// whatever size of distribution llama.cpp hands over.
import type { LlamaModel, Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TokenProbabilities } from "../node-agent/token-probabilities.ts";
import { loadTinyModel } from "./support/tiny-model.ts";

describe("TokenProbabilities", () => {
  let model: LlamaModel;
  beforeAll(async () => {
    model = await loadTinyModel();
  });
  afterAll(async () => {
    await model?.llama.dispose();
  });

  /** A distribution over `size` tokens, best first, as llama.cpp hands it over. */
  const distribution = (size: number, best: Token) => {
    const map = new Map<Token, number>([[best, 0.5]]);
    for (let t = 0; map.size < size; t++) if (t !== best) map.set(t as Token, 0.5 / size);
    return map;
  };

  it("holds only the top candidates of each token sampled and not yet kept", () => {
    const tokens = model.tokenize(" Once upon a time there was a little girl");
    const probabilities = new TokenProbabilities(model, 3);
    // Every candidate of a large vocabulary, for every token: only 3 of each may be held.
    for (const token of tokens)
      probabilities.record({ token, probability: 0.5, probabilities: distribution(20_000, token) });
    expect(probabilities.heldCandidates).toBe(3 * tokens.length);

    const first = probabilities.take(tokens.slice(0, 2));
    expect(probabilities.heldCandidates).toBe(3 * (tokens.length - 2));
    expect(first[0]!.top_logprobs).toHaveLength(3);
    expect(first[0]!.logprob).toBeCloseTo(Math.log(0.5));
    expect(first[0]!.top_logprobs[0]!.logprob).toBeCloseTo(Math.log(0.5));

    const rest = probabilities.take(tokens.slice(2));
    expect(probabilities.heldCandidates).toBe(0);
    expect([...first, ...rest].map((e) => e.token).join("")).toBe(model.detokenize(tokens).trimStart());
  });

  it("keeps no candidates without top_logprobs", () => {
    const [token] = model.tokenize(" Once");
    const probabilities = new TokenProbabilities(model, 0);
    probabilities.record({ token: token!, probability: 0.25, probabilities: distribution(1_000, token!) });
    expect(probabilities.heldCandidates).toBe(0);
    const [entry] = probabilities.take([token!]);
    expect(entry!.logprob).toBeCloseTo(Math.log(0.25));
    expect(entry!.top_logprobs).toEqual([]);
  });
});
