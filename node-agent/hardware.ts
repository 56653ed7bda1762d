/** What this machine offers models: accelerator, chip, memory, and the CPUs this process may use. */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism, cpus, platform, totalmem } from "node:os";

export interface Hardware {
  accelerator: "metal" | "cpu";
  /** Label-safe chip name, e.g. Apple-M2-Ultra. */
  chip: string;
  /** Unified (or system) memory in bytes. */
  memoryBytes: number;
  /** Memory models may use: the GPU wired limit on a Mac, memory less headroom elsewhere. */
  modelMemoryBytes: number;
}

/** Leave room for the agent, the OS and llama.cpp's own buffers on CPU nodes. */
const cpuHeadroom = 0.8;
/** macOS lets the GPU wire about this share of RAM unless iogpu.wired_limit_mb says otherwise. */
const defaultWiredShare = 0.7;

export function detectHardware(): Hardware {
  if (platform() === "darwin") {
    const memoryBytes = Number(sysctl("hw.memsize") ?? totalmem());
    const wiredMb = Number(sysctl("iogpu.wired_limit_mb") ?? 0);
    const modelMemoryBytes = wiredMb > 0 ? wiredMb * 1024 * 1024 : Math.floor(memoryBytes * defaultWiredShare);
    const brand = sysctl("machdep.cpu.brand_string") ?? cpus()[0]?.model ?? "unknown";
    return { accelerator: "metal", chip: labelValue(brand), memoryBytes, modelMemoryBytes };
  }
  const limit = cgroupMemoryLimit();
  const memoryBytes = limit !== undefined ? Math.min(limit, totalmem()) : totalmem();
  return {
    accelerator: "cpu",
    chip: labelValue(cpus()[0]?.model ?? "unknown"),
    memoryBytes,
    modelMemoryBytes: Math.floor(memoryBytes * cpuHeadroom),
  };
}

/**
 * Threads llama.cpp should use: the cgroup CPU quota bounds availableParallelism (which already honours
 * affinity). More threads than real CPUs makes llama.cpp's spinning workers fight and generation crawl.
 */
export function usableCpus(): number {
  const parallel = availableParallelism();
  const quota = cgroupCpuQuota();
  return Math.max(1, quota !== undefined ? Math.min(parallel, Math.floor(quota)) || 1 : parallel);
}

function cgroupCpuQuota(): number | undefined {
  const text = readText("/sys/fs/cgroup/cpu.max");
  if (!text) return undefined;
  const [quota, period] = text.trim().split(/\s+/);
  if (!quota || quota === "max" || !period) return undefined;
  const cpusAllowed = Number(quota) / Number(period);
  return Number.isFinite(cpusAllowed) && cpusAllowed > 0 ? cpusAllowed : undefined;
}

function cgroupMemoryLimit(): number | undefined {
  const text = readText("/sys/fs/cgroup/memory.max")?.trim();
  if (!text || text === "max") return undefined;
  const bytes = Number(text);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

function sysctl(name: string): string | undefined {
  try {
    return execFileSync("sysctl", ["-n", name], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** Label values: at most 63 of [A-Za-z0-9._-], starting and ending alphanumeric. */
export function labelValue(text: string): string {
  const cleaned = text
    .replace(/\((R|TM)\)/gi, "")
    .replace(/[^A-Za-z0-9._-]+/g, "-")
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, "")
    .slice(0, 63)
    .replace(/[^A-Za-z0-9]+$/, "");
  return cleaned || "unknown";
}
