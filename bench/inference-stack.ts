/**
 * Inference through the stack: generation tokens/s of one stream, and aggregate tokens/s of 1, 4 and 8
 * concurrent streams, through gateway + node-agent, through the node-agent alone, and with node-llama-cpp
 * called directly in this process — same model, context, 8 sequences in one context (the agent's
 * continuous batching), threads, prompt, max tokens and greedy sampling on every path.
 *
 * The agent is the real app and replica engine in its own process (bench/_agent-replica.ts); the gateway is
 * the real app with a fixed config pointing at it (bench/_static-gateway.ts). The agent serves over mutual
 * TLS and the gateway reaches it with its client certificate (bench/_node-tls.ts), as `npm start` and the
 * chart run that hop; the agent-alone path presents the gateway's certificate too. Streams are SSE completions
 * with usage, read to the end; a stream's rate is its completion tokens over the time from sending the
 * request to its last byte, so the time to first token counts on every path. The paths take turns round
 * by round, one at a time, never together (they would share the same cores). The agent-alone column
 * splits the gap between the agent's HTTP serving and the gateway's relay.
 *
 *   node bench/inference-stack.ts   (POMONA_BENCH_MODEL, POMONA_THREADS override the model and threads)
 */
import { LlamaCompletion, type LlamaContextSequence } from "node-llama-cpp";
import { Agent } from "undici";
import { BENCH_ENGINE, BENCH_MODEL, BENCH_PROMPT, BENCH_THREADS, benchContext } from "./_bench-model.ts";
import { startBenchChild } from "./_child.ts";
import { BENCH_NODE_TOKEN, benchKey, generousPolicy, staticGatewaySpec } from "./_gateway-config.ts";
import { benchNodeTls } from "./_node-tls.ts";
import { quickNote, size } from "./_size.ts";
import { readCompletionStream } from "./_sse-stream.ts";
import { median } from "./_stats.ts";
import { targetTable } from "./_targets.ts";

const ROUNDS = size(5, 1);
const MAX_TOKENS = size(400, 32);
const CONCURRENCY = [1, 4, 8];
const API_KEY = "sk-pomona-bench";

interface Stream {
  tokens: number;
  seconds: number;
}
/** One batch of concurrent streams: each stream's figures and the wall time of the whole batch. */
interface Batch {
  streams: Stream[];
  seconds: number;
}
type Path = (concurrency: number) => Promise<Batch>;

async function batch(concurrency: number, one: () => Promise<Stream>): Promise<Batch> {
  const started = performance.now();
  const streams = await Promise.all(Array.from({ length: concurrency }, one));
  return { streams, seconds: (performance.now() - started) / 1000 };
}

/** node-llama-cpp alone: one context with the same sequences, a completion per stream, text streamed. */
async function directPath(): Promise<{ run: Path; close: () => Promise<void> }> {
  const { context, close } = await benchContext();
  const free: LlamaContextSequence[] = Array.from({ length: context.totalSequences }, () => context.getSequence());
  const one = async (): Promise<Stream> => {
    const sequence = free.pop();
    if (!sequence) throw new Error("more streams than sequences");
    const started = performance.now();
    let tokens = 0;
    const completion = new LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false });
    try {
      // A fresh history each time, as the agent gives each request, so no path reuses a cached prompt.
      await sequence.clearHistory();
      await completion.generateCompletion(BENCH_PROMPT, {
        maxTokens: MAX_TOKENS,
        temperature: 0,
        repeatPenalty: false,
        onToken: (t) => {
          tokens += t.length;
        },
        onTextChunk: () => {},
      });
    } finally {
      completion.dispose({ disposeSequence: false });
      free.push(sequence);
    }
    return { tokens, seconds: (performance.now() - started) / 1000 };
  };
  return {
    run: (concurrency) => batch(concurrency, one),
    close,
  };
}

/** One SSE completion over HTTP, read to the end; tokens from the usage chunk. */
function httpPath(url: string, authorization: string, dispatcher?: Agent): Path {
  const body = { model: "bench", prompt: BENCH_PROMPT, max_tokens: MAX_TOKENS };
  return (concurrency) => batch(concurrency, () => readCompletionStream(url, authorization, body, dispatcher));
}

const tls = await benchNodeTls();
const agent = await startBenchChild("_agent-replica.ts", [
  BENCH_MODEL,
  String(BENCH_THREADS),
  BENCH_NODE_TOKEN,
  JSON.stringify(tls.node),
]);
const replicaBase = `https://127.0.0.1:${agent.port}/replicas/bench/replica`;
// The agent-alone path calls the node as the gateway does: with the gateway's client certificate.
const asGateway = new Agent({ connect: { cert: tls.gateway.cert, key: tls.gateway.key, ca: tls.gateway.ca } });
const gateway = await startBenchChild("_static-gateway.ts", [
  JSON.stringify(
    staticGatewaySpec({
      model: "bench",
      endpoint: replicaBase,
      contextSize: BENCH_ENGINE.contextSize,
      keys: [benchKey(API_KEY, generousPolicy.name)],
      policies: [generousPolicy],
      nodeTls: tls.gateway,
    }),
  ),
]);
const direct = await directPath();
const paths: [string, Path][] = [
  ["node-llama-cpp in-process", direct.run],
  [
    "node-agent alone (HTTPS SSE, mutual TLS)",
    httpPath(`${replicaBase}/v1/completions`, `Bearer ${BENCH_NODE_TOKEN}`, asGateway),
  ],
  [
    "gateway + node-agent (mutual TLS)",
    httpPath(`http://127.0.0.1:${gateway.port}/v1/completions`, `Bearer ${API_KEY}`),
  ],
];

try {
  // per path, per concurrency: one figure per round
  const perStream = new Map<string, Map<number, number[]>>();
  const aggregate = new Map<string, Map<number, number[]>>();
  for (const [label] of paths) {
    perStream.set(label, new Map(CONCURRENCY.map((c) => [c, []])));
    aggregate.set(label, new Map(CONCURRENCY.map((c) => [c, []])));
  }
  // The first round warms caches and connections on every path and is not counted.
  for (let round = 0; round <= ROUNDS; round++) {
    for (const concurrency of CONCURRENCY) {
      for (const [label, run] of paths) {
        const b = await run(concurrency);
        if (round === 0) continue;
        const tokens = b.streams.reduce((sum, s) => sum + s.tokens, 0);
        perStream
          .get(label)
          ?.get(concurrency)
          ?.push(median(b.streams.map((s) => s.tokens / s.seconds)));
        aggregate
          .get(label)
          ?.get(concurrency)
          ?.push(tokens / b.seconds);
      }
    }
  }
  const figure = (m: Map<string, Map<number, number[]>>, label: string, c: number) =>
    median(m.get(label)?.get(c) ?? []);
  const [directLabel, , stackLabel] = paths.map(([label]) => label) as [string, string, string];
  const rows = paths.map(
    ([label]) =>
      `| ${label} | ${CONCURRENCY.map((c) => `${figure(perStream, label, c).toFixed(0)} / ${figure(aggregate, label, c).toFixed(0)}`).join(" | ")} |`,
  );
  const ratioRows = paths
    .slice(1)
    .map(
      ([label]) =>
        `| ${label} / direct | ${CONCURRENCY.map((c) => (figure(aggregate, label, c) / figure(aggregate, directLabel, c)).toFixed(3)).join(" | ")} |`,
    );
  const single = figure(perStream, stackLabel, 1) / figure(perStream, directLabel, 1);
  const scale = figure(aggregate, stackLabel, 8) / figure(aggregate, stackLabel, 1);
  // Time the stack adds to each token of one stream; it does not grow with the model (one SSE chunk per
  // token whatever the model), so it also says what the ratio would be on a model with slower tokens.
  const addedMsPerToken = 1000 / figure(perStream, stackLabel, 1) - 1000 / figure(perStream, directLabel, 1);
  const onSlowerModel = (msPerToken: number) => `${((100 * msPerToken) / (msPerToken + addedMsPerToken)).toFixed(1)}%`;
  // What llama.cpp itself gains from batching on this machine: the ceiling for the stack's gain.
  const directScale = figure(aggregate, directLabel, 8) / figure(aggregate, directLabel, 1);
  console.log(`### Inference through the stack (median of ${ROUNDS} rounds after a warm-up round)
${quickNote()}
${BENCH_MODEL.split("/").pop()}, ${BENCH_THREADS} thread(s), context ${BENCH_ENGINE.contextSize} shared by ${BENCH_ENGINE.parallelSequences} sequences, prompt "${BENCH_PROMPT}", up to ${MAX_TOKENS} tokens per stream, temperature 0. Figures are tokens/s: per stream (median of the streams) / aggregate (all streams' tokens over the batch's wall time).

| path | ${CONCURRENCY.map((c) => `${c} stream${c > 1 ? "s" : ""}`).join(" | ")} |
|---|${CONCURRENCY.map(() => "---|").join("")}
${rows.join("\n")}

| aggregate ratio | ${CONCURRENCY.map((c) => `${c}`).join(" | ")} |
|---|${CONCURRENCY.map(() => "---|").join("")}
${ratioRows.join("\n")}

${targetTable([
  {
    target: "one stream through the stack ≥ 95% of direct",
    measured: `${(single * 100).toFixed(1)}%`,
    met: single >= 0.95,
  },
  {
    target: "aggregate at 8 streams well above one stream (stack)",
    measured: `${scale.toFixed(2)}× one stream (node-llama-cpp alone: ${directScale.toFixed(2)}×)`,
    met: scale >= 1.5,
  },
])}

The stack adds ${addedMsPerToken.toFixed(2)} ms to each token of one stream (the agent's SSE write, the gateway's relay, the client's read, and their processes sharing the cores with llama.cpp). That cost does not depend on the model, so on a model making a token every 25 ms (40 tokens/s) the same stack would give about ${onSlowerModel(25)} of direct, and ${onSlowerModel(10)} at 10 ms a token: an estimate from this run, not a measurement.

"Well above" is read as at least 1.5×. How much batching can give depends on the model and the hardware, not on the stack: node-llama-cpp alone shows the ceiling.`);
} finally {
  await direct.close();
  await gateway.stop();
  await agent.stop();
  await asGateway.close();
}
