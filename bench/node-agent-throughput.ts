/**
 * Node-agent throughput: tokens per second of one stream through the agent's HTTP endpoint (SSE, the
 * real app in its own process, bench/_agent-replica.ts) against node-llama-cpp called directly in this
 * process, with the same model, engine settings, prompt and threads. Median over several runs each; the
 * two sides run one after the other, never together, since they would share the same cores.
 *
 *   node bench/node-agent-throughput.ts [model.gguf]   (POMONA_THREADS overrides the thread count)
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { getLlama } from "node-llama-cpp";
import { usableCpus } from "../node-agent/hardware.ts";
import { ReplicaEngine } from "../node-agent/replica-engine.ts";
import { median } from "./_stats.ts";

const MODEL = process.argv[2] ?? "/work/shared/models/stories260K.gguf";
const THREADS = Number(process.env.POMONA_THREADS ?? usableCpus());
const RUNS = 7;
const MAX_TOKENS = 400;
const PROMPT = "Once upon a time";
const TOKEN = "bench-node-token";

interface Run {
  tokens: number;
  seconds: number;
}

async function viaAgent(): Promise<Run[]> {
  const child: ChildProcess = spawn(
    process.execPath,
    [join(import.meta.dirname, "_agent-replica.ts"), MODEL, String(THREADS), TOKEN],
    { stdio: ["ignore", "ignore", "inherit", "ipc"] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    child.once("message", (m) => resolve((m as { port: number }).port));
    child.once("exit", (code) => reject(new Error(`the agent server exited with ${code}`)));
  });
  const url = `http://127.0.0.1:${port}/replicas/bench/replica/v1/completions`;
  const runs: Run[] = [];
  try {
    for (let i = 0; i <= RUNS; i++) {
      const started = performance.now();
      const response = await fetch(url, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
        body: JSON.stringify({
          model: "bench",
          prompt: PROMPT,
          max_tokens: MAX_TOKENS,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      const text = await response.text();
      const seconds = (performance.now() - started) / 1000;
      const usage = text
        .split("\n\n")
        .map((e) => e.replace(/^data: /, ""))
        .filter((e) => e.startsWith("{"))
        .map((e) => JSON.parse(e) as { usage?: { completion_tokens: number } })
        .find((e) => e.usage)?.usage;
      // The first run warms caches on both sides and is not counted.
      if (i > 0) runs.push({ tokens: usage?.completion_tokens ?? 0, seconds });
    }
  } finally {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.disconnect();
    await exited;
  }
  return runs;
}

async function direct(): Promise<Run[]> {
  const llama = await getLlama({
    gpu: process.platform === "darwin" ? "auto" : false,
    build: "never",
    progressLogs: false,
    maxThreads: THREADS,
  });
  const engine = await ReplicaEngine.load(
    llama,
    MODEL,
    { contextSize: 2048, parallelSequences: 1, embeddings: false },
    { threads: THREADS, queueLimit: 8 },
  );
  const runs: Run[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const started = performance.now();
    const result = await engine.complete(PROMPT, { maxTokens: MAX_TOKENS, temperature: 0 }, { onText: () => {} });
    if (i > 0) runs.push({ tokens: result.completionTokens, seconds: (performance.now() - started) / 1000 });
  }
  await engine.dispose();
  await llama.dispose();
  return runs;
}

const rate = (runs: Run[]) => median(runs.map((r) => r.tokens / r.seconds));
const agent = rate(await viaAgent());
const inProcess = rate(await direct());
console.log(`### node-agent throughput (one stream, ${MAX_TOKENS} tokens, ${THREADS} thread(s), median of ${RUNS})\n`);
console.log("| path | tokens/s |");
console.log("|---|---|");
console.log(`| node-llama-cpp in-process | ${inProcess.toFixed(0)} |`);
console.log(`| node-agent HTTP stream (SSE) | ${agent.toFixed(0)} |`);
console.log(`| ratio agent / direct | ${(agent / inProcess).toFixed(3)} |`);
