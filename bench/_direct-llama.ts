/**
 * node-llama-cpp called directly in this process, as the baseline the stack is compared with: one model,
 * one context per thread count asked for, each with the same sequences and per-sequence context as the
 * node-agent gives a replica (node-agent/replica-engine.ts), so both do the same work. Streams beyond the
 * free sequences wait in a first-come line, as the agent's sequence pool makes them wait.
 */
import { getLlama, LlamaCompletion, type LlamaContext, type LlamaContextSequence } from "node-llama-cpp";
import { perSequenceContext } from "../crds/api/index.ts";
import type { StreamFigures } from "./_sse-stream.ts";

export interface DirectEngine {
  threads: number;
  stream: (prompt: string, maxTokens: number) => Promise<StreamFigures>;
  /** Frees this thread count's context (and its threads) early; `close` frees whatever is left. */
  dispose: () => Promise<void>;
}

export async function loadDirect(
  modelPath: string,
  engine: { contextSize: number; parallelSequences: number },
  threadCounts: number[],
): Promise<{ engines: DirectEngine[]; close: () => Promise<void> }> {
  const llama = await getLlama({
    gpu: process.platform === "darwin" ? "auto" : false,
    build: "never",
    progressLogs: false,
    maxThreads: Math.max(...threadCounts),
  });
  const model = await llama.loadModel({ modelPath, gpuLayers: llama.gpu === false ? 0 : "auto" });
  const contexts: LlamaContext[] = [];
  const engines: DirectEngine[] = [];
  for (const threads of threadCounts) {
    const context = await model.createContext({
      sequences: engine.parallelSequences,
      contextSize: perSequenceContext(engine),
      threads,
    });
    contexts.push(context);
    const free: LlamaContextSequence[] = Array.from({ length: context.totalSequences }, () => context.getSequence());
    const waiting: ((s: LlamaContextSequence) => void)[] = [];
    const acquire = () =>
      new Promise<LlamaContextSequence>((resolve) => {
        const s = free.pop();
        if (s) resolve(s);
        else waiting.push(resolve);
      });
    const release = (s: LlamaContextSequence) => {
      const next = waiting.shift();
      if (next) next(s);
      else free.push(s);
    };
    engines.push({
      threads,
      dispose: () => context.dispose(),
      stream: async (prompt, maxTokens) => {
        const started = performance.now();
        const sequence = await acquire();
        let tokens = 0;
        let firstTextMs: number | undefined;
        const completion = new LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false });
        try {
          // A fresh history each time, as the agent gives each request, so no cached prompt is reused.
          await sequence.clearHistory();
          await completion.generateCompletion(prompt, {
            maxTokens,
            temperature: 0,
            repeatPenalty: false,
            onToken: (t) => {
              tokens += t.length;
            },
            onTextChunk: (text) => {
              if (firstTextMs === undefined && text.length > 0) firstTextMs = performance.now() - started;
            },
          });
        } finally {
          completion.dispose({ disposeSequence: false });
          release(sequence);
        }
        return { firstTextMs, tokens, seconds: (performance.now() - started) / 1000 };
      },
    });
  }
  return {
    engines,
    close: async () => {
      for (const c of contexts) if (!c.disposed) await c.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}
