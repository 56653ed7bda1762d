/**
 * The tokens a request reserves before it runs. The prompt is estimated at one
 * token per 4 characters of text (rounded up, at least 1), the usual figure
 * for English with BPE tokenizers; the completion reserves max_tokens, or
 * DEFAULT_COMPLETION_TOKENS capped by what one request to the model may hold
 * (its sequence's context) when the client gave none, once for each of the
 * request's `n` choices. The real usage replaces the estimate when the answer
 * ends.
 */
export const CHARS_PER_TOKEN = 4;
export const DEFAULT_COMPLETION_TOKENS = 512;

export function estimatePromptTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / CHARS_PER_TOKEN));
}

export function reservation(
  promptText: string,
  maxTokens: number | undefined,
  sequenceContextSize: number,
  choices = 1,
): number {
  const completion = maxTokens ?? Math.min(DEFAULT_COMPLETION_TOKENS, sequenceContextSize);
  return estimatePromptTokens(promptText) + completion * choices;
}
