import { LlamaContext } from "node-llama-cpp";
import { ReplicaEngine } from "../node-agent/replica-engine.ts";
import { BENCH_ENGINE, BENCH_MODEL, benchLlama } from "./_bench-model.ts";
const log: string[] = [];
const proto = (LlamaContext as any).prototype;
const orig = proto.dispatchPendingBatch;
proto.dispatchPendingBatch = function (...a: unknown[]) { log.push("dispatch"); return orig.apply(this, a); };
const llama = await benchLlama(1);
const engine = await ReplicaEngine.load(llama, BENCH_MODEL, { ...BENCH_ENGINE, threads: 1 }, { maxThreads: 1, queueLimit: 4 });
await engine.complete("Once upon a time", { maxTokens: 30, temperature: 0 }, {
  onText: () => { log.push("token"); setImmediate(() => { log.push("hop1"); setImmediate(() => log.push("hop2 flush")); }); },
});
console.log(log.slice(10, 40).join(" → "));
await engine.dispose();
