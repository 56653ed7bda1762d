/**
 * The sampling and choice parameters of an OpenAI request as the replica engine takes them: `n`,
 * `logprobs`/`top_logprobs`, `logit_bias` (checked against the model's vocabulary) and the llama.cpp
 * extensions `top_k` and `min_p`. A value the model cannot honour is refused with the parameter named.
 */
import { type LlamaModel, type Token, TokenBias } from "node-llama-cpp";
import { type ChatCompletionRequest, type CompletionRequest, samplingRefusal } from "../crds/api/openai-requests.ts";
import { invalid } from "./errors.ts";
import type { GenerationParams } from "./replica-engine.ts";

type SamplingParams = Pick<GenerationParams, "topK" | "minP" | "tokenBias" | "logprobs" | "choices">;

export function samplingParams(body: ChatCompletionRequest | CompletionRequest, model: LlamaModel): SamplingParams {
  const refusal = samplingRefusal(body);
  if (refusal) throw invalid(refusal.message, refusal.param);
  return {
    topK: body.top_k ?? undefined,
    minP: body.min_p ?? undefined,
    tokenBias: body.logit_bias ? tokenBiasOf(body.logit_bias, model) : undefined,
    logprobs: logprobsOf(body),
    choices: body.n ?? undefined,
  };
}

function logprobsOf(body: ChatCompletionRequest | CompletionRequest): { top: number } | undefined {
  if ("messages" in body) return body.logprobs === true ? { top: body.top_logprobs ?? 0 } : undefined;
  return body.logprobs == null ? undefined : { top: body.logprobs };
}

/**
 * OpenAI's logit_bias: the value is added to the token's logit before sampling, so 100 all but forces the
 * token; -100 bans it outright here (llama.cpp's "never"), as OpenAI describes -100. The end-of-text
 * tokens cannot be biased in llama.cpp, so biasing one is refused rather than ignored.
 */
function tokenBiasOf(biases: Record<string, number>, model: LlamaModel): TokenBias {
  const vocabulary = vocabularySize(model);
  const bias = new TokenBias(model.tokenizer);
  for (const [key, value] of Object.entries(biases)) {
    const token = Number(key) as Token;
    if (token >= vocabulary)
      throw invalid(
        `logit_bias names token ${key}, but this model's vocabulary has ${vocabulary} tokens.`,
        "logit_bias",
      );
    if (model.isEogToken(token))
      throw invalid(
        `logit_bias cannot bias token ${key}: it ends the text, and llama.cpp does not bias it.`,
        "logit_bias",
      );
    if (value !== 0) bias.set(token, value <= -100 ? "never" : { logit: value });
  }
  return bias;
}

function vocabularySize(model: LlamaModel): number {
  const tokens = model.fileInfo.metadata.tokenizer?.ggml?.tokens;
  if (!tokens)
    throw invalid("logit_bias is not available for this model: its vocabulary size is unknown.", "logit_bias");
  return tokens.length;
}
