/**
 * Picks a replica's llama.cpp thread count by measuring it instead of counting cores: on a machine shared
 * with other work, more threads than there are idle cores makes llama.cpp's spinning workers fight, and
 * one thread can decode several times faster than two. node-llama-cpp fixes a context's threads when the
 * context is made, so each candidate gets its own small probe context (one sequence, a short context: the
 * weights dominate decode time, and the probe's KV cache stays small), decodes the same prompt for a
 * short, time-capped run, and the fastest count wins. A second round re-runs the candidates that came
 * within half of the best, so a burst of outside load during one run does not decide alone, while a
 * clear loser (e.g. two threads crawling on a busy two-core machine) costs only one run.
 * Cost: one probe context per candidate plus about probeBudgetMs per run (and one token that may
 * overrun it); for the test fixture, well under 2 s.
 */
import type { LlamaContext, LlamaModel } from "node-llama-cpp";

export interface ThreadMeasurement {
  threads: number;
  /** Best speed over the rounds: tokens per second of a short run, prompt included. */
  tokensPerSecond: number;
}

const probePrompt = "Once upon a time";
const probeContextSize = 256;
const probeTokens = 32;
/** A candidate's run stops after this long, so a slow count costs little; the speed so far is its score. */
const probeBudgetMs = 250;

/** 1, 2, 4, … below the most, and the most itself: few runs even on a machine with many cores. */
export function threadCandidates(most: number): number[] {
  const out: number[] = [];
  for (let t = 1; t < most; t *= 2) out.push(t);
  out.push(Math.max(1, most));
  return out;
}

export async function measureThreads(model: LlamaModel, candidates: number[]): Promise<ThreadMeasurement[]> {
  const probes: Probe[] = [];
  try {
    for (const threads of candidates)
      probes.push({
        threads,
        context: await model.createContext({ contextSize: probeContextSize, sequences: 1, threads }),
        best: 0,
        pending: undefined,
      });
    const prompt = model.tokenize(probePrompt);
    for (const probe of probes) probe.best = await decodeSpeed(probe, prompt);
    const leader = Math.max(...probes.map((p) => p.best));
    for (const probe of probes)
      if (probe.best >= leader / 2 && !probe.pending)
        probe.best = Math.max(probe.best, await decodeSpeed(probe, prompt));
    return probes.map(({ threads, best }) => ({ threads, tokensPerSecond: Math.round(best * 10) / 10 }));
  } finally {
    // A probe whose last token overran its budget is disposed once that decode is done, off the load's path.
    for (const probe of probes)
      void (probe.pending ?? Promise.resolve()).then(() => probe.context.dispose()).catch(() => {});
  }
}

/** The fastest measured count; ties go to fewer threads, which leave more CPU to everything else. */
export function fastest(measured: ThreadMeasurement[]): number {
  let best = measured[0]!;
  for (const m of measured) if (m.tokensPerSecond > best.tokensPerSecond) best = m;
  return best.threads;
}

interface Probe {
  threads: number;
  context: LlamaContext;
  best: number;
  /** The clean-up of a decode still running after its run's budget ran out. */
  pending: Promise<unknown> | undefined;
}

const overrun = Symbol("overrun");

/**
 * Tokens per second of one run: the prompt, then tokens until probeTokens or the budget. A decode cannot
 * be interrupted, so a run does not wait for a token past the budget: it is scored with the tokens it has,
 * and that decode finishes in the background.
 */
async function decodeSpeed(probe: Probe, prompt: ReturnType<LlamaModel["tokenize"]>): Promise<number> {
  const sequence = probe.context.getSequence();
  const tokens = sequence.evaluate(prompt, { temperature: 0 });
  const started = performance.now();
  let count = 0;
  let timer: NodeJS.Timeout | undefined;
  const budget = new Promise<typeof overrun>((resolve) => {
    timer = setTimeout(() => resolve(overrun), probeBudgetMs);
  });
  try {
    while (count < probeTokens) {
      const next = tokens.next();
      const result = await Promise.race([next, budget]);
      if (result === overrun) {
        probe.pending = next.then(() => tokens.return()).finally(() => sequence.dispose());
        return count / (probeBudgetMs / 1000);
      }
      if (result.done) break;
      count++;
    }
    await tokens.return();
    sequence.dispose();
    const seconds = (performance.now() - started) / 1000;
    return count > 0 && seconds > 0 ? count / seconds : 0;
  } finally {
    clearTimeout(timer);
  }
}
