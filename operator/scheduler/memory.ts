/**
 * How much model memory one replica needs: spec.memory when given, else an
 * estimate from the GGUF header (weights + KV cache for the context and its
 * sequences + overhead). A figure that is unknown and cannot be read is
 * refused, never guessed: overcommitting a Mac's wired memory kills the host.
 */
import type { InferenceModelSpec } from "../../crds/api/index.ts";
import { parseQuantity } from "./quantity.ts";

const overheadBytes = 64 * 2 ** 20;

export type MemoryFigure = { bytes: number } | { error: string };

/** Memory for a spec; `readHeader` is only called when spec.memory is unset. */
export async function replicaMemory(
  spec: InferenceModelSpec,
  readHeader: (location: string) => Promise<{ weightsBytes: number; contextBytes: number }> = estimateFromGguf(spec),
): Promise<MemoryFigure> {
  if (spec.memory !== undefined) {
    const bytes = parseQuantity(spec.memory);
    return bytes === undefined ? { error: `memory ${JSON.stringify(spec.memory)} is not a quantity` } : { bytes };
  }
  const location = spec.source.url ?? spec.source.path;
  if (!location) {
    return {
      error: "spec.memory is unset and the size of an hf: source cannot be read from here; set spec.memory (e.g. 2Gi)",
    };
  }
  try {
    const { weightsBytes, contextBytes } = await readHeader(location);
    return { bytes: Math.ceil(weightsBytes + contextBytes + overheadBytes) };
  } catch (err) {
    return {
      error: `spec.memory is unset and the GGUF header of ${location} could not be read: ${(err as Error).message}`,
    };
  }
}

function estimateFromGguf(spec: InferenceModelSpec) {
  return async (location: string) => {
    const { readGgufFileInfo, GgufInsights } = await import("node-llama-cpp");
    const info = await readGgufFileInfo(location, { logWarnings: false, readTensorInfo: true });
    const insights = await GgufInsights.from(info);
    const context = insights.estimateContextResourceRequirements({
      contextSize: spec.engine.contextSize,
      sequences: spec.engine.parallelSequences,
      modelGpuLayers: insights.totalLayers,
    });
    return { weightsBytes: insights.modelSize, contextBytes: context.cpuRam + context.gpuVram };
  };
}
