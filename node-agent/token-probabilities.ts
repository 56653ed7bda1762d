/**
 * Log probabilities of generated tokens, in OpenAI's two shapes. llama.cpp reports, for each sampled
 * token, the probability of every candidate the sampler chain left — after logit_bias, the repeat
 * penalties, top_k/top_p/min_p and the temperature; at temperature 0 (greedy) that is the model's softmax
 * with bias and penalties only. A logprob is the natural log of that probability; candidates the chain
 * removed (probability 0) never appear.
 */
import type { LlamaModel, Token } from "node-llama-cpp";

/** What llama.cpp said when it sampled one token: its probability, and the candidates' when asked, best first. */
export interface SampledToken {
  token: Token;
  probability: number;
  probabilities: ReadonlyMap<Token, number> | undefined;
}

export interface TokenAlternative {
  token: string;
  logprob: number;
  bytes: number[];
}

/** One generated token with its log probability and the `top` most likely alternatives. */
export interface TokenLogprob extends TokenAlternative {
  top_logprobs: TokenAlternative[];
}

/** What is kept of one sampled token until the generation keeps it: its probability and the best `top` candidates. */
interface HeldToken {
  token: Token;
  probability: number;
  /** Best first; undefined when alternatives were not asked for. */
  top: [Token, number][] | undefined;
}

/**
 * Collects what the sequence sampled, in order (paced-sequence.ts feeds it), and turns the tokens the
 * generation kept into logprob entries. Tokens LlamaCompletion holds back and drops (the end-of-text
 * token) are sampled but never kept, so the kept tokens are a prefix of the sampled ones. A stop string's
 * tokens are kept here and left out with its text (stop-text.ts).
 *
 * llama.cpp hands over every candidate of every token (the whole vocabulary when greedy or top_k 0): only
 * the best `top` of them are held, and a token's entry is dropped once the generation keeps it, so what is
 * held is the few tokens sampled but not yet kept, at most `top` candidates each.
 */
export class TokenProbabilities {
  private readonly model: LlamaModel;
  private readonly top: number;
  /** Sampled, not yet kept, oldest first. */
  private held: HeldToken[] = [];
  /** The last tokens kept in this choice: a token's text depends on what precedes it (a leading space). */
  private before: Token[] = [];

  constructor(model: LlamaModel, top: number) {
    this.model = model;
    this.top = top;
  }

  /** Whether the whole distribution is needed (for alternatives), not only each sampled token's probability. */
  get alternatives(): boolean {
    return this.top > 0;
  }

  /** The candidates held right now, over all tokens sampled and not yet kept (what the bound is about). */
  get heldCandidates(): number {
    return this.held.reduce((n, h) => n + (h.top?.length ?? 0), 0);
  }

  record(sampled: SampledToken): void {
    let top: [Token, number][] | undefined;
    if (sampled.probabilities && this.top > 0) {
      top = [];
      for (const [token, p] of sampled.probabilities) {
        if (p <= 0 || top.length >= this.top) break;
        top.push([token, p]);
      }
    }
    this.held.push({ token: sampled.token, probability: sampled.probability, top });
  }

  /** Start the next choice: what the previous one sampled and did not keep is dropped. */
  reset(): void {
    this.held = [];
    this.before = [];
  }

  /** Entries for the next tokens the generation kept, in the order it kept them. */
  take(tokens: readonly Token[]): TokenLogprob[] {
    const out: TokenLogprob[] = [];
    const taken = this.held.splice(0, tokens.length);
    tokens.forEach((token, i) => {
      const at = taken[i];
      // A stop trigger of node-llama-cpp's own (a grammar's) that starts inside a token makes it
      // re-tokenize the kept text, so the kept token may differ from the sampled one: its probability is
      // then read from the held candidates, or, when it is not among them, is the sampled token's.
      const probability =
        at === undefined
          ? 0
          : at.token === token
            ? at.probability
            : (at.top?.find(([t]) => t === token)?.[1] ?? at.probability);
      const before = this.before;
      out.push({
        ...this.alternative(token, probability, before),
        top_logprobs: at?.top ? at.top.map(([t, p]) => this.alternative(t, p, before)) : [],
      });
      this.before = [...before.slice(1 - CONTEXT_TOKENS), token];
    });
    return out;
  }

  /** The token's text as it reads after `before`, the way the answer's text is detokenized. */
  private alternative(token: Token, probability: number, before: Token[]): TokenAlternative {
    const text = this.model.detokenize([token], true, before);
    // log(0) is -Infinity, which JSON cannot carry; OpenAI writes -9999.0 for "practically impossible".
    const logprob = probability > 0 ? Math.max(Math.log(probability), IMPOSSIBLE) : IMPOSSIBLE;
    return { token: text, logprob, bytes: [...Buffer.from(text, "utf8")] };
  }
}

/**
 * The entry of a token a stop string starts inside: the part of its text before the stop, with the
 * sampled token's log probability and alternatives.
 */
export function truncated(entry: TokenLogprob, chars: number): TokenLogprob {
  const token = entry.token.slice(0, chars);
  return { ...entry, token, bytes: [...Buffer.from(token, "utf8")] };
}

const IMPOSSIBLE = -9999;
/** Enough preceding tokens for the tokenizer to decide a token's leading space. */
const CONTEXT_TOKENS = 4;

/** The chat shape of one choice's (or one chunk's) logprobs. */
export function chatLogprobs(entries: TokenLogprob[]) {
  return { content: entries, refusal: null };
}

/**
 * The legacy completions shape: parallel arrays, `top_logprobs` a token → logprob object holding the
 * alternatives and always the sampled token, and `text_offset` each token's character offset, counted
 * from the start of the prompt as OpenAI does.
 */
export function legacyLogprobs(entries: TokenLogprob[], offset: number) {
  const text_offset: number[] = [];
  let at = offset;
  for (const e of entries) {
    text_offset.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => {
      const top: Record<string, number> = {};
      for (const alt of e.top_logprobs) top[alt.token] ??= alt.logprob;
      top[e.token] ??= e.logprob;
      return top;
    }),
    text_offset,
  };
}
