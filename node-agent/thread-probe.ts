/**
 * Picks a replica's llama.cpp thread count by measuring it instead of counting cores: on a machine shared
 * with other work, more threads than there are idle cores makes llama.cpp's spinning workers fight, and
 * one thread can decode several times faster than two. node-llama-cpp fixes a context's threads when the
 * context is made, so each candidate gets its own small probe context (one sequence, a short context: the
 * weights dominate decode time, and the probe's KV cache stays small), decodes the same prompt for a
 * short, time-capped run, and the fastest count wins. Two rounds, interleaved, so a burst of outside load
 * during one run does not decide alone.
 */
import type { LlamaContext, LlamaModel } from "node-llama-cpp";

export interface ThreadMeasurement {
  threads: number;
  /** Best decode speed over the rounds, tokens per second after the first token. */
  tokensPerSecond: number;
}

const probePrompt = "Once upon a time";
const probeContextSize = 256;
const probeTokens = 32;
/** A candidate's run stops after this long, so a slow count costs little; the speed so far is its score. */
const probeBudgetMs = 250;
const rounds = 2;

/** 1, 2, 4, … below the most, and the most itself: few runs even on a machine with many cores. */
export function threadCandidates(most: number): number[] {
  const out: number[] = [];
  for (let t = 1; t < most; t *= 2) out.push(t);
  out.push(Math.max(1, most));
  return out;
}

export async function measureThreads(model: LlamaModel, candidates: number[]): Promise<ThreadMeasurement[]> {
  const contexts: { threads: number; context: LlamaContext; best: number }[] = [];
  try {
    for (const threads of candidates)
      contexts.push({
        threads,
        context: await model.createContext({ contextSize: probeContextSize, sequences: 1, threads }),
        best: 0,
      });
    const prompt = model.tokenize(probePrompt);
    for (let round = 0; round < rounds; round++)
      for (const probe of contexts) probe.best = Math.max(probe.best, await decodeSpeed(probe.context, prompt));
    return contexts.map(({ threads, best }) => ({ threads, tokensPerSecond: Math.round(best * 10) / 10 }));
  } finally {
    for (const { context } of contexts) await context.dispose().catch(() => {});
  }
}

/** The fastest measured count; ties go to fewer threads, which leave more CPU to everything else. */
export function fastest(measured: ThreadMeasurement[]): number {
  let best = measured[0]!;
  for (const m of measured) if (m.tokensPerSecond > best.tokensPerSecond) best = m;
  return best.threads;
}

async function decodeSpeed(context: LlamaContext, prompt: ReturnType<LlamaModel["tokenize"]>): Promise<number> {
  const sequence = context.getSequence();
  try {
    let started: number | undefined;
    let tokens = 0;
    for await (const _ of sequence.evaluate(prompt, { temperature: 0 })) {
      // The first token pays for the prompt; decode speed is measured from there.
      if (started === undefined) {
        started = performance.now();
        continue;
      }
      tokens++;
      if (tokens >= probeTokens || performance.now() - started >= probeBudgetMs) break;
    }
    const seconds = started === undefined ? 0 : (performance.now() - started) / 1000;
    return tokens > 0 && seconds > 0 ? tokens / seconds : 0;
  } finally {
    sequence.dispose();
  }
}
