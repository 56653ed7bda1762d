/**
 * How much model memory one replica needs: spec.memory when given, else an
 * estimate from the GGUF header (weights + KV cache for the context and its
 * sequences + overhead). A figure that is unknown and cannot be read is
 * refused, never guessed: overcommitting a Mac's wired memory kills the host.
 * Headers of remote files are read through the guarded fetcher (model-source/), the same the node-agent
 * downloads with: the operator runs inside the cluster and must not be a way to reach its insides.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultHfEndpoint, hfFileUrl, type InferenceModelSpec } from "../../crds/api/index.ts";
import { parseQuantity } from "../../crds/api/quantity.ts";
import { fetchModelSource, ModelSourceError, type ModelSourcePolicy } from "../../model-source/guarded-fetch.ts";
import { modelSourcePolicy } from "../../model-source/policy.ts";
import { showUrl } from "../../model-source/show-url.ts";
import { readHeaderPrefix } from "./gguf-prefix.ts";

const overheadBytes = 64 * 2 ** 20;
const headerReadTimeoutMs = 15_000;

/** An error carries the condition reason: SourceNotAllowed when the fetch policy refused the file's URL. */
export type MemoryFigure = { bytes: number } | { error: string; reason: "MemoryUnknown" | "SourceNotAllowed" };

type HeaderReader = (location: string) => Promise<{ weightsBytes: number; contextBytes: number }>;

/** Memory for a spec; the header is only read when spec.memory is unset. */
export async function replicaMemory(
  spec: InferenceModelSpec,
  {
    hfEndpoint = defaultHfEndpoint,
    sources = modelSourcePolicy({ allowedHosts: undefined, hfEndpoint }),
    readHeader = estimateFromGguf(spec, sources),
  }: { hfEndpoint?: string; sources?: ModelSourcePolicy; readHeader?: HeaderReader } = {},
): Promise<MemoryFigure> {
  if (spec.memory !== undefined) {
    const bytes = parseQuantity(spec.memory);
    return bytes === undefined
      ? { error: `memory ${JSON.stringify(spec.memory)} is not a quantity`, reason: "MemoryUnknown" }
      : { bytes };
  }
  const location = spec.source.url ?? spec.source.path ?? (spec.source.hf && hfFileUrl(spec.source.hf, hfEndpoint));
  if (!location) {
    return {
      reason: "MemoryUnknown",
      error:
        "spec.memory is unset and the Hub picks the file of an hf:owner/repo:quant source, so its size cannot be read from here; set spec.memory (e.g. 2Gi) or name the file (hf:owner/repo/file.gguf)",
    };
  }
  try {
    const { weightsBytes, contextBytes } = await readHeader(location);
    return { bytes: Math.ceil(weightsBytes + contextBytes + overheadBytes) };
  } catch (err) {
    // Only scheme, host and path: a signed URL's query must not reach status or Events.
    const shown = spec.source.path ?? showUrl(location);
    return {
      reason:
        err instanceof ModelSourceError && err.reason === "SourceNotAllowed" ? "SourceNotAllowed" : "MemoryUnknown",
      error: `spec.memory is unset and the GGUF header of ${shown} could not be read: ${(err as Error).message}`,
    };
  }
}

function estimateFromGguf(spec: InferenceModelSpec, sources: ModelSourcePolicy) {
  return async (location: string) => {
    const { readGgufFileInfo, GgufInsights } = await import("node-llama-cpp");
    // A reconcile waits for this read: give up within seconds and let the MemoryUnknown retry try again later.
    const signal = AbortSignal.timeout(headerReadTimeoutMs);
    const info = spec.source.path
      ? await readGgufFileInfo(location, { logWarnings: false, readTensorInfo: true, signal })
      : await readRemoteHeader(location, sources, signal);
    const insights = await GgufInsights.from(info);
    const context = insights.estimateContextResourceRequirements({
      contextSize: spec.engine.contextSize,
      sequences: spec.engine.parallelSequences,
      modelGpuLayers: insights.totalLayers,
    });
    return { weightsBytes: insights.modelSize, contextBytes: context.cpuRam + context.gpuVram };
  };
}

/**
 * The header of a remote GGUF, read as a growing prefix (node-llama-cpp's own network reader would follow
 * any redirect): the first bytes go through the guarded fetcher into a temporary file, which node-llama-cpp
 * parses; a header longer than the prefix is read again with a longer one.
 */
async function readRemoteHeader(url: string, sources: ModelSourcePolicy, signal: AbortSignal) {
  const { readGgufFileInfo } = await import("node-llama-cpp");
  if (/-\d{5}-of-\d{5}\.gguf$/.test(new URL(url).pathname))
    throw new Error("the file is split into parts, whose sizes are not added up from here; set spec.memory");
  const dir = await mkdtemp(join(tmpdir(), "pomona-gguf-"));
  try {
    return await readHeaderPrefix(
      (bytes) =>
        fetchModelSource(
          url,
          { ...sources, maxBytes: Number.MAX_SAFE_INTEGER },
          {
            headers: { range: `bytes=0-${bytes - 1}` },
            signal,
          },
        ),
      join(dir, "header.gguf"),
      (path) => readGgufFileInfo(path, { sourceType: "filesystem", logWarnings: false, readTensorInfo: true, signal }),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
