/**
 * How much of a non-streamed answer the gateway reads from a node before it gives up. Embeddings are the
 * largest answers the request schema allows: up to 2,048 inputs (crds/api/openai-requests.ts), each a
 * vector of floats written as JSON numbers, at worst 23 bytes a float32 (`-1.2345678901234567e-7,`).
 * The default fits a full batch for an embedding width of up to 1,024 (most embedding models: 384 to
 * 1,024); wider models need a higher POMONA_GATEWAY_ANSWER_LIMIT_BYTES, smaller batches or base64.
 */
const MAX_EMBEDDING_INPUTS = 2048;
const EMBEDDING_WIDTH = 1024;
const BYTES_PER_JSON_FLOAT = 23;
/** `{"object":"embedding","index":2047,"embedding":[…]},` around each vector. */
const BYTES_PER_ITEM = 64;
/** The list envelope, model name and usage. */
const ENVELOPE_BYTES = 1024;

export const defaultAnswerLimitBytes =
  MAX_EMBEDDING_INPUTS * (EMBEDDING_WIDTH * BYTES_PER_JSON_FLOAT + BYTES_PER_ITEM) + ENVELOPE_BYTES;

/**
 * An estimate of one logprob entry in a non-streamed answer: `{"token":…,"logprob":…,"bytes":[…]}` for
 * a token of up to about 16 bytes, plus its share of the answer's text. An estimate, not a bound: tokens
 * of many escaped bytes are longer, typical ones shorter.
 */
const BYTES_PER_LOGPROB_ENTRY = 128;

/**
 * The largest non-streamed answer a request asking for logprobs may produce, estimated: every choice
 * generating every token it may, each with its entry and `top` alternatives. Undefined without logprobs
 * (text alone stays far below the limit). `maxTokens` is what one choice may generate.
 */
export function logprobsAnswerBytes(
  request: { n?: number | null; logprobs?: boolean | number | null; top_logprobs?: number | null },
  maxTokens: number,
): number | undefined {
  const legacy = typeof request.logprobs === "number";
  if (request.logprobs == null || request.logprobs === false) return undefined;
  const top = legacy ? (request.logprobs as number) : (request.top_logprobs ?? 0);
  return (request.n ?? 1) * maxTokens * (1 + top) * BYTES_PER_LOGPROB_ENTRY + ENVELOPE_BYTES;
}
