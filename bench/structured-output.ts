/**
 * The cost of grammar-constrained generation: tokens/s of one stream with response_format json_schema and
 * with free text, on the same chat prompt, through gateway + node-agent and with node-llama-cpp called
 * directly in this process (the same context and sequences, the same prompt text the agent renders, a grammar from
 * llama.createGrammarForJsonSchema made for each request as the agent makes one — one grammar object reused
 * across requests measured about half as fast here with node-llama-cpp 3.22). Greedy sampling, so both
 * paths generate the same tokens. A stream's rate is its completion tokens over the time from sending the
 * request to its last byte (time to first token included), as in bench/inference-stack.ts; the paths take
 * turns request by request, never together.
 *
 * Target (issue 14): json_schema tokens/s through the stack ≥ 0.9 × direct.
 *
 *   node bench/structured-output.ts [--quick]   (POMONA_BENCH_MODEL, POMONA_THREADS as in _bench-model.ts)
 */
import { LlamaCompletion } from "node-llama-cpp";
import { chatPrompt } from "../node-agent/chat-prompt.ts";
import { responseFormatNote } from "../node-agent/structured-output.ts";
import { BENCH_ENGINE, BENCH_MODEL, BENCH_THREADS, benchContext } from "./_bench-model.ts";
import { startBenchChild, startStaticGateway } from "./_child.ts";
import { BENCH_NODE_TOKEN, benchKey, generousPolicy, staticGatewaySpec } from "./_gateway-config.ts";
import { quickNote, size } from "./_size.ts";
import { median } from "./_stats.ts";
import { targetTable } from "./_targets.ts";

const ROUNDS = size(20, 2);
const MAX_TOKENS = 400;
const API_KEY = "sk-pomona-bench";
const MESSAGES = [{ role: "user" as const, content: "Tell me a story about a cat and a dog" }];
/** Explicit bounds, so the agent's grammar is node-llama-cpp's grammar for this very schema (no implicit caps). */
const SCHEMA = {
  type: "object",
  properties: {
    title: { type: "string", maxLength: 16 },
    mood: { type: "string", enum: ["happy", "sad", "funny"] },
    story: { type: "string", maxLength: 32 },
    moral: { type: "boolean" },
  },
  required: ["title", "mood", "story", "moral"],
  additionalProperties: false,
} as const;
const FORMAT = { type: "json_schema", json_schema: { name: "story", schema: SCHEMA, strict: true } } as const;

interface Figures {
  tokens: number;
  /** From sending the request to the last token. */
  seconds: number;
  /** From the first token to the last: the generation alone, as the agent's tokens/s metric counts it. */
  generationSeconds: number;
}
type Mode = "json" | "text";
type Path = (mode: Mode) => Promise<Figures>;

async function directPath(): Promise<{ run: Path; close: () => Promise<void> }> {
  const { model, context, close } = await benchContext();
  const sequence = context.getSequence();
  const prompts = {
    json: chatPrompt(model, MESSAGES, { notes: [responseFormatNote(FORMAT)!] }),
    text: chatPrompt(model, MESSAGES),
  };
  const run = async (mode: Mode): Promise<Figures> => {
    const { prompt, stop } = prompts[mode];
    const started = performance.now();
    let tokens = 0;
    let first: number | undefined;
    let last = started;
    const completion = new LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false });
    try {
      // A fresh history each time, as the agent gives each request.
      await sequence.clearHistory();
      await completion.generateCompletion(prompt, {
        maxTokens: MAX_TOKENS,
        temperature: 0,
        repeatPenalty: false,
        customStopTriggers: stop,
        grammar: mode === "json" ? await model.llama.createGrammarForJsonSchema(SCHEMA) : undefined,
        onToken: (t) => {
          tokens += t.length;
        },
        // Timed on text, as the client times the stack's stream (trailing whitespace is held back on both).
        onTextChunk: () => {
          last = performance.now();
          first ??= last;
        },
      });
    } finally {
      completion.dispose({ disposeSequence: false });
    }
    return { tokens, seconds: (last - started) / 1000, generationSeconds: (last - (first ?? last)) / 1000 };
  };
  return {
    run,
    close,
  };
}

/** One streamed chat completion through the gateway, read as it comes; tokens from the usage chunk. */
function stackPath(url: string, authorization: string): Path {
  return async (mode) => {
    const started = performance.now();
    const response = await fetch(url, {
      method: "POST",
      headers: { authorization, "content-type": "application/json" },
      body: JSON.stringify({
        model: "bench",
        messages: MESSAGES,
        max_tokens: MAX_TOKENS,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
        ...(mode === "json" ? { response_format: FORMAT } : {}),
      }),
    });
    if (response.status !== 200 || !response.body)
      throw new Error(`${url} answered ${response.status}: ${(await response.text()).slice(0, 300)}`);
    let buffer = "";
    let content = "";
    let usage: { completion_tokens: number } | undefined;
    let first: number | undefined;
    let last = started;
    const decoder = new TextDecoder();
    for await (const bytes of response.body) {
      buffer += decoder.decode(bytes, { stream: true });
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        const event = buffer.slice(0, end).replace(/^data: /, "");
        buffer = buffer.slice(end + 2);
        end = buffer.indexOf("\n\n");
        if (!event.startsWith("{")) continue;
        const chunk = JSON.parse(event) as {
          usage?: { completion_tokens: number };
          choices?: { delta?: { content?: string } }[];
        };
        usage = chunk.usage ?? usage;
        const text = chunk.choices?.[0]?.delta?.content;
        if (text) {
          content += text;
          last = performance.now();
          first ??= last;
        }
      }
    }
    if (!usage) throw new Error(`${url} sent no usage chunk`);
    if (mode === "json") JSON.parse(content);
    return {
      tokens: usage.completion_tokens,
      seconds: (last - started) / 1000,
      generationSeconds: (last - (first ?? last)) / 1000,
    };
  };
}

const agent = await startBenchChild("_agent-replica.ts", [BENCH_MODEL, String(BENCH_THREADS), BENCH_NODE_TOKEN]);
const gateway = await startStaticGateway([
  JSON.stringify(
    staticGatewaySpec({
      model: "bench",
      endpoint: `http://127.0.0.1:${agent.port}/replicas/bench/replica`,
      contextSize: BENCH_ENGINE.contextSize / BENCH_ENGINE.parallelSequences,
      keys: [benchKey(API_KEY, generousPolicy.name)],
      policies: [generousPolicy],
    }),
  ),
]);
const direct = await directPath();
const paths: [string, Path][] = [
  ["node-llama-cpp in-process", direct.run],
  ["gateway + node-agent", stackPath(`http://127.0.0.1:${gateway.port}/v1/chat/completions`, `Bearer ${API_KEY}`)],
  // Splits the gap between the agent's serving and the gateway's relay.
  [
    "node-agent alone (HTTP SSE)",
    stackPath(
      `http://127.0.0.1:${agent.port}/replicas/bench/replica/v1/chat/completions`,
      `Bearer ${BENCH_NODE_TOKEN}`,
    ),
  ],
];

try {
  const rates = new Map<string, number[]>();
  const generationRates = new Map<string, number[]>();
  const tokens = new Map<string, number[]>();
  const key = (label: string, mode: Mode) => `${label}|${mode}`;
  const add = (m: Map<string, number[]>, k: string, v: number) => m.set(k, [...(m.get(k) ?? []), v]);
  // The first round warms caches and connections on every path and is not counted.
  // The machine's load drifts: each round's stack figure is also divided by the direct figure measured
  // just before it, and the target is read on the median of those paired ratios.
  const paired = new Map<string, number[]>();
  for (let round = 0; round <= ROUNDS; round++) {
    for (const mode of ["json", "text"] as const) {
      const generationOf: number[] = [];
      const endToEnd: number[] = [];
      for (const [label, run] of paths) {
        const f = await run(mode);
        generationOf.push((f.tokens - 1) / f.generationSeconds);
        endToEnd.push(f.tokens / f.seconds);
        if (round === 0) continue;
        add(rates, key(label, mode), f.tokens / f.seconds);
        add(generationRates, key(label, mode), (f.tokens - 1) / f.generationSeconds);
        add(tokens, key(label, mode), f.tokens);
      }
      if (round === 0) continue;
      add(paired, `generation|${mode}`, generationOf[1]! / generationOf[0]!);
      add(paired, `end|${mode}`, endToEnd[1]! / endToEnd[0]!);
      add(paired, `agent|${mode}`, generationOf[2]! / generationOf[0]!);
    }
  }
  const rate = (label: string, mode: Mode) => median(rates.get(key(label, mode)) ?? []);
  const generation = (label: string, mode: Mode) => median(generationRates.get(key(label, mode)) ?? []);
  const count = (label: string, mode: Mode) => median(tokens.get(key(label, mode)) ?? []);
  const [directLabel] = paths.map(([label]) => label) as [string];
  const ratio = median(paired.get("generation|json") ?? []);
  const withFirst = median(paired.get("end|json") ?? []);
  const textRatio = median(paired.get("generation|text") ?? []);
  // Time the stack adds to each generated token, per format, from the paired ratio (robust to the load's
  // drift, unlike a difference of two medians); it does not grow with the model.
  const addedMs = (mode: Mode) =>
    (1000 / generation(directLabel, mode)) * (1 / median(paired.get(`generation|${mode}`) ?? []) - 1);
  const onSlowerModel = (msPerToken: number) => `${((100 * msPerToken) / (msPerToken + addedMs("json"))).toFixed(1)}%`;
  const rows = paths.map(
    ([label]) =>
      `| ${label} | ${generation(label, "json").toFixed(0)} / ${rate(label, "json").toFixed(0)} (${count(label, "json")} tokens) | ${generation(label, "text").toFixed(0)} / ${rate(label, "text").toFixed(0)} (${count(label, "text")} tokens) | ${(generation(label, "json") / generation(label, "text")).toFixed(3)} |`,
  );
  console.log(`### Structured output: grammar-constrained generation (median of ${ROUNDS} requests per figure after a warm-up round)
${quickNote()}
${BENCH_MODEL.split("/").pop()}, ${BENCH_THREADS} thread(s), context ${BENCH_ENGINE.contextSize} shared by ${BENCH_ENGINE.parallelSequences} sequences on every path, one stream at a time, the chat prompt ${JSON.stringify(MESSAGES[0]!.content)}, temperature 0, up to ${MAX_TOKENS} tokens. json_schema is a four-property object (bounded strings, an enum, a boolean); free text is the same messages without response_format. Figures are tokens/s of one stream: generation (first token to last, as the agent's own tokens/s metric) / end to end (request sent to last token, time to first token included).

| path | json_schema tokens/s | free text tokens/s | json / free (generation) |
|---|---|---|---|
${rows.join("\n")}

${targetTable([
  {
    target: "json_schema generation tokens/s through the stack ≥ 0.9 × direct",
    measured: `${ratio.toFixed(3)} × direct (end to end, first token included: ${withFirst.toFixed(3)} ×)`,
    met: ratio >= 0.9,
  },
])}

Ratios are medians of paired rounds (the stack's figure over the direct one measured just before it). For comparison, free text through the stack gives ${textRatio.toFixed(3)} × direct in the same run; the node-agent alone gives ${median(paired.get("agent|json") ?? []).toFixed(3)} × (json_schema) and ${median(paired.get("agent|text") ?? []).toFixed(3)} × (free text). The stack adds ${addedMs("json").toFixed(3)} ms to each json_schema token and ${addedMs("text").toFixed(3)} ms to each free-text token (the agent's SSE write, the gateway's relay, the client's read, with processes sharing the cores): the grammar runs the same in both paths, but a constrained token of the fixture takes only ${(1000 / generation(directLabel, "json")).toFixed(2)} ms, so that fixed cost weighs more. On a model making a token every 25 ms the same added cost would give about ${onSlowerModel(25)} of direct, and ${onSlowerModel(10)} at 10 ms a token: an estimate from this run, not a measurement.

The target is read on generation tokens/s: the grammar's cost is paid per token, while the time to the first token holds per-request costs (HTTP through two processes, building the grammar) that a short, schema-bounded answer spreads over few tokens; the end-to-end ratio is shown beside it.`);
} finally {
  await direct.close();
  await gateway.stop();
  await agent.stop();
}
