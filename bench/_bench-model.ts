/**
 * The model and engine settings the inference benchmarks share, so the stack and node-llama-cpp alone
 * always run the same thing. POMONA_BENCH_MODEL points at another GGUF; POMONA_THREADS sets the threads.
 *
 * Threads: one less than the CPUs this process may use (at least one), on every path alike. The node-agent
 * itself takes all of them, but here the load generator and the gateway, which in production run on other
 * machines, share the node's cores; llama.cpp threads that find their core busy spin and slow down tens of
 * times (seen on two cores with two threads: a stream went past the gateway's 30 s first-byte timeout),
 * which would measure contention, not the stack. llama.cpp's own default oversubscribes even more.
 */
import { join } from "node:path";
import { getLlama, type Llama, type LlamaContext, type LlamaModel } from "node-llama-cpp";
import { perSequenceContext } from "../crds/api/index.ts";
import { usableCpus } from "../node-agent/hardware.ts";

/** The fixture model, found relative to the repository as the tests find it (../shared/models). */
export const FIXTURE_MODEL = join(import.meta.dirname, "..", "..", "shared", "models", "stories260K.gguf");
export const BENCH_MODEL = process.env.POMONA_BENCH_MODEL ?? FIXTURE_MODEL;
export const BENCH_THREADS = Number(process.env.POMONA_THREADS ?? Math.max(1, usableCpus() - 1));
/** Eight sequences of 512 tokens: the tiny model's training context, room for prompt and completion. */
export const BENCH_ENGINE = { contextSize: 8 * 512, parallelSequences: 8, embeddings: false } as const;
export const BENCH_PROMPT = "Once upon a time";

export function benchLlama(threads: number): Promise<Llama> {
  return getLlama({
    gpu: process.platform === "darwin" ? "auto" : false,
    build: "never",
    progressLogs: false,
    maxThreads: threads,
  });
}

/** node-llama-cpp alone in this process: the bench model in one context of BENCH_ENGINE's sequences, as the agent makes it. */
export async function benchContext(): Promise<{
  model: LlamaModel;
  context: LlamaContext;
  close: () => Promise<void>;
}> {
  const llama = await benchLlama(BENCH_THREADS);
  const model = await llama.loadModel({ modelPath: BENCH_MODEL, gpuLayers: llama.gpu === false ? 0 : "auto" });
  const context = await model.createContext({
    sequences: BENCH_ENGINE.parallelSequences,
    contextSize: perSequenceContext(BENCH_ENGINE),
    threads: BENCH_THREADS,
  });
  return {
    model,
    context,
    close: async () => {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}
