// The gateway's estimate of a non-streamed answer with logprobs (gateway/answer-limit.ts), which decides
// whether such a request is refused up front rather than answered 502 once it outgrows the answer limit.
import { describe, expect, it } from "vitest";
import { defaultAnswerLimitBytes, logprobsAnswerBytes } from "../gateway/answer-limit.ts";

describe("logprobsAnswerBytes", () => {
  it("is undefined without logprobs", () => {
    expect(logprobsAnswerBytes({ n: 8 }, 32_768)).toBeUndefined();
    expect(logprobsAnswerBytes({ n: 8, logprobs: false }, 32_768)).toBeUndefined();
  });

  it("puts n: 8 with top_logprobs: 20 on a large context over the default limit, and one choice under it", () => {
    expect(logprobsAnswerBytes({ n: 8, logprobs: true, top_logprobs: 20 }, 4_096)).toBeGreaterThan(
      defaultAnswerLimitBytes,
    );
    expect(logprobsAnswerBytes({ logprobs: true, top_logprobs: 20 }, 4_096)).toBeLessThan(defaultAnswerLimitBytes);
    expect(logprobsAnswerBytes({ n: 8, logprobs: true }, 4_096)).toBeLessThan(defaultAnswerLimitBytes);
  });

  it("counts legacy completions' logprobs as the number of alternatives", () => {
    expect(logprobsAnswerBytes({ logprobs: 5 }, 1_000)).toBe(
      logprobsAnswerBytes({ logprobs: true, top_logprobs: 5 }, 1_000),
    );
    expect(logprobsAnswerBytes({ logprobs: 0 }, 1_000)).toBeGreaterThan(0);
  });
});
