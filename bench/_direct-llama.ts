/**
 * node-llama-cpp called directly in this process, as the baseline the stack is compared with: one model,
 * one context per thread count asked for, each with the same sequences and per-sequence context as the
 * node-agent gives a replica (node-agent/replica-engine.ts), so both do the same work. Streams beyond the
 * free sequences wait in a first-come line, as the agent's sequence pool makes them wait.
 */
import { getLlama, LlamaCompletion, type LlamaContext, type LlamaContextSequence } from "node-llama-cpp";
import { perSequenceContext } from "../crds/api/index.ts";

export interface StreamFigures {
  /** ms from the call to the first piece of text; undefined if none came. */
  firstTextMs: number | undefined;
  tokens: number;
  /** From the call to the last token. */
  seconds: number;
  /** Over HTTP through the gateway: the time it held the request in its waiting line (`x-pomona-queue-ms`). */
  queueMs?: number;
}

export interface DirectEngine {
  threads: number;
  stream: (prompt: string, maxTokens: number) => Promise<StreamFigures>;
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
      for (const c of contexts) await c.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}

/** One SSE completion over HTTP read to its end: time to the first event carrying text, usage tokens. */
export async function httpStream(
  url: string,
  authorization: string,
  body: Record<string, unknown>,
): Promise<StreamFigures> {
  const started = performance.now();
  const response = await fetch(url, {
    method: "POST",
    headers: { authorization, "content-type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true }, temperature: 0 }),
  });
  if (response.status !== 200 || !response.body)
    throw new Error(`${url} answered ${response.status}: ${(await response.text()).slice(0, 200)}`);
  const queued = response.headers.get("x-pomona-queue-ms");
  const decoder = new TextDecoder();
  let text = "";
  let firstTextMs: number | undefined;
  for await (const bytes of response.body) {
    text += decoder.decode(bytes as Uint8Array, { stream: true });
    if (firstTextMs === undefined && /"text":"[^"]|"content":"[^"]/.test(text))
      firstTextMs = performance.now() - started;
  }
  const seconds = (performance.now() - started) / 1000;
  const usage = text
    .split("\n\n")
    .map((e) => e.replace(/^data: /, ""))
    .filter((e) => e.startsWith("{"))
    .map((e) => JSON.parse(e) as { usage?: { completion_tokens: number } })
    .find((e) => e.usage)?.usage;
  if (!usage) throw new Error(`${url} sent no usage chunk`);
  return {
    firstTextMs,
    tokens: usage.completion_tokens,
    seconds,
    queueMs: queued === null ? undefined : Number(queued),
  };
}
