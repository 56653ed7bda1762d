/**
 * What logprobs and n choices cost in generation speed, side by side in one process on the node-agent's own
 * replica engine (node-agent/replica-engine.ts): single-sequence tokens/s of a plain greedy completion
 * against the same completion with logprobs (the sampled token only, and 20 alternatives), and one request
 * with n = 4 choices against four requests of one choice. Rounds alternate the variants so drift in a busy
 * machine's speed falls on all alike, and the CPU time this process spent per token (llama.cpp's threads
 * included) is reported beside the wall-clock rate: on a shared machine it is the steadier figure. The fixture's vocabulary has 512 tokens; llama.cpp hands over the
 * probability of every candidate when logprobs are asked, so a model with a 150,000-token vocabulary pays
 * more per token than this shows (POMONA_BENCH_MODEL runs it on another GGUF).
 *
 *   node bench/sampling.ts [--quick]
 */
import { ReplicaEngine } from "../node-agent/replica-engine.ts";
import { BENCH_ENGINE, BENCH_MODEL, BENCH_PROMPT, BENCH_THREADS, benchLlama } from "./_bench-model.ts";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 3 : 15;
const MAX_TOKENS = quick ? 64 : 256;
const CHOICES = 4;

const llama = await benchLlama(BENCH_THREADS);
const engine = await ReplicaEngine.load(
  llama,
  BENCH_MODEL,
  { ...BENCH_ENGINE, threads: BENCH_THREADS },
  { maxThreads: BENCH_THREADS, queueLimit: 64 },
);
await engine.warmUp();

type Variant = { name: string; run: () => Promise<number> };
const once = (extra: object) => async () =>
  (await engine.complete(BENCH_PROMPT, { maxTokens: MAX_TOKENS, temperature: 0, ...extra })).completionTokens;
const variants: Variant[] = [
  { name: "plain", run: once({}) },
  { name: "logprobs, sampled token only", run: once({ logprobs: { top: 0 } }) },
  { name: "logprobs, 20 alternatives", run: once({ logprobs: { top: 20 } }) },
  { name: `n = ${CHOICES} in one request`, run: once({ choices: CHOICES }) },
  {
    name: `${CHOICES} requests of one choice`,
    run: async () => {
      let tokens = 0;
      for (let i = 0; i < CHOICES; i++) tokens += await once({})();
      return tokens;
    },
  },
];

const totals = new Map(variants.map((v) => [v.name, { tokens: 0, seconds: 0, cpuMicros: 0 }]));
for (let round = 0; round < ROUNDS; round++) {
  for (const v of round % 2 === 0 ? variants : [...variants].reverse()) {
    const started = performance.now();
    const cpu = process.cpuUsage();
    const tokens = await v.run();
    const used = process.cpuUsage(cpu);
    const t = totals.get(v.name)!;
    t.tokens += tokens;
    t.seconds += (performance.now() - started) / 1000;
    t.cpuMicros += used.user + used.system;
  }
}
await engine.dispose();

const rate = (name: string) => {
  const t = totals.get(name)!;
  return t.tokens / t.seconds;
};
const cpuPerToken = (name: string) => {
  const t = totals.get(name)!;
  return t.cpuMicros / t.tokens;
};
const base = rate("plain");
const baseCpu = cpuPerToken("plain");
console.log("## Sampling: logprobs and n choices\n");
console.log(
  `${BENCH_MODEL.split("/").pop()}, ${BENCH_THREADS} thread(s), ${ROUNDS} rounds of ${MAX_TOKENS} tokens at temperature 0, one sequence, in-process replica engine.\n`,
);
console.log("| variant | tokens/s | × plain | CPU µs/token | × plain |");
console.log("|---|---:|---:|---:|---:|");
for (const v of variants) {
  const cpu = cpuPerToken(v.name);
  console.log(
    `| ${v.name} | ${rate(v.name).toFixed(0)} | ${(rate(v.name) / base).toFixed(2)} | ${cpu.toFixed(0)} | ${(cpu / baseCpu).toFixed(2)} |`,
  );
}
