// The fixture model loaded with llama.cpp in the test's own process, for tests of its tokenizer and
// grammars that need no node-agent.
import { getLlama, type LlamaModel } from "node-llama-cpp";
import { tinyModel } from "./node-agent.ts";

/** On the CPU with one thread, as the cores are shared; `model.llama.dispose()` frees both. */
export async function loadTinyModel(): Promise<LlamaModel> {
  const llama = await getLlama({ gpu: false, build: "never", progressLogs: false, maxThreads: 1 });
  return llama.loadModel({ modelPath: tinyModel });
}
