/**
 * Picks a replica's llama.cpp thread count by measuring it instead of counting cores: on a machine shared
 * with other work, more threads than there are idle cores makes llama.cpp's spinning workers fight, and
 * one thread can decode several times faster than two. node-llama-cpp fixes a context's threads when the
 * context is made, so each candidate gets its own small probe context (one sequence, a short context: the
 * weights dominate decode time, and the probe's KV cache stays small), decodes the same prompt for a
 * short, time-capped run, and the fastest count wins. Every candidate runs twice, the second round in
 * reverse order, and keeps its better run: a burst of outside load (a process starting beside the agent)
 * during one run, or the first run's cold start, cannot decide alone. Re-running only the candidates
 * within half of the best was tried first and once chose 2 threads over 1 during `npm start` (7× slower
 * for good): the one run of 1 thread had been starved below half of 2's.
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
        pending: undefined,
      });
    const prompt = model.tokenize(probePrompt);
    const byThreads = new Map(probes.map((p) => [p.threads, p]));
    return await bestOfTwoRounds(candidates, async (threads) => {
      const probe = byThreads.get(threads)!;
      // A decode that overran its first run gets one budget more to finish; still busy, its first score stands.
      if (probe.pending && !(await settlesWithin(probe.pending, probeBudgetMs))) return 0;
      probe.pending = undefined;
      return decodeSpeed(probe, prompt);
    });
  } finally {
    // A probe whose last token overran its budget is disposed once that decode is done, off the load's path.
    for (const probe of probes)
      void (probe.pending ?? Promise.resolve()).then(() => probe.context.dispose()).catch(() => {});
  }
}

/** Each candidate's better speed of two rounds, the second in reverse order (so neither always goes first). */
export async function bestOfTwoRounds(
  candidates: number[],
  speedOf: (threads: number) => Promise<number>,
): Promise<ThreadMeasurement[]> {
  const best = new Map<number, number>();
  for (const threads of [...candidates, ...[...candidates].reverse()])
    best.set(threads, Math.max(best.get(threads) ?? 0, await speedOf(threads)));
  return candidates.map((threads) => ({ threads, tokensPerSecond: Math.round((best.get(threads) ?? 0) * 10) / 10 }));
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

async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
