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
import { resolve } from "node:path";
import { getLlama, type Llama } from "node-llama-cpp";
import { usableCpus } from "../node-agent/hardware.ts";

export const BENCH_MODEL =
  process.env.POMONA_BENCH_MODEL ?? resolve(import.meta.dirname, "..", "..", "shared", "models", "stories260K.gguf");
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
