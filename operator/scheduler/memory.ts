/**
 * How much model memory one replica needs: spec.memory when given, else an
 * estimate from the GGUF header (weights + KV cache for the context and its
 * sequences + overhead). A figure that is unknown and cannot be read is
 * refused, never guessed: overcommitting a Mac's wired memory kills the host.
 */
import { defaultHfEndpoint, hfFileUrl, type InferenceModelSpec } from "../../crds/api/index.ts";
import { parseQuantity } from "../../crds/api/quantity.ts";

const overheadBytes = 64 * 2 ** 20;
const headerReadTimeoutMs = 15_000;

export type MemoryFigure = { bytes: number } | { error: string };

type HeaderReader = (location: string) => Promise<{ weightsBytes: number; contextBytes: number }>;

/** Memory for a spec; the header is only read when spec.memory is unset. */
export async function replicaMemory(
  spec: InferenceModelSpec,
  {
    hfEndpoint = defaultHfEndpoint,
    readHeader = estimateFromGguf(spec),
  }: { hfEndpoint?: string; readHeader?: HeaderReader } = {},
): Promise<MemoryFigure> {
  if (spec.memory !== undefined) {
    const bytes = parseQuantity(spec.memory);
    return bytes === undefined ? { error: `memory ${JSON.stringify(spec.memory)} is not a quantity` } : { bytes };
  }
  const location = spec.source.url ?? spec.source.path ?? (spec.source.hf && hfFileUrl(spec.source.hf, hfEndpoint));
  if (!location) {
    return {
      error:
        "spec.memory is unset and the Hub picks the file of an hf:owner/repo:quant source, so its size cannot be read from here; set spec.memory (e.g. 2Gi) or name the file (hf:owner/repo/file.gguf)",
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
    // A reconcile waits for this read: give up within seconds (node-llama-cpp would retry for two minutes) and
    // let the MemoryUnknown retry try again later.
    const info = await readGgufFileInfo(location, {
      logWarnings: false,
      readTensorInfo: true,
      fetchRetryOptions: { retries: 2, minTimeout: 500, maxTimeout: 2_000 },
      signal: AbortSignal.timeout(headerReadTimeoutMs),
    });
    const insights = await GgufInsights.from(info);
    const context = insights.estimateContextResourceRequirements({
      contextSize: spec.engine.contextSize,
      sequences: spec.engine.parallelSequences,
      modelGpuLayers: insights.totalLayers,
    });
    return { weightsBytes: insights.modelSize, contextBytes: context.cpuRam + context.gpuVram };
  };
}
