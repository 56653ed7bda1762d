/**
 * Benchmark helpers run as child processes (a gateway, an upstream, an agent) that report their port over
 * IPC once they listen. Each runs in its own process so the load generator never shares its event loop.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve as resolvePath } from "node:path";
import { nodeFlagsFor } from "../crds/api/well-known.ts";
import type { LoopStats } from "./_loop-stats.ts";

export interface BenchChild {
  child: ChildProcess;
  port: number;
  /** Ends the child and waits for it: disconnect first (helpers that hold resources clean up), then SIGKILL. */
  stop: () => Promise<void>;
}

/**
 * `script`: a file in bench/, or an absolute path (another checkout's helper, for a side-by-side run);
 * `nodeFlags`: Node's own flags for it.
 */
export function startBenchChild(
  script: string,
  args: string[] = [],
  env: Record<string, string> = {},
  timeoutMs = 120_000,
  nodeFlags: readonly string[] = [],
): Promise<BenchChild> {
  const child = spawn(process.execPath, [...nodeFlags, resolvePath(import.meta.dirname, script), ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    if (child.connected) child.disconnect();
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${script} did not report its port within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once("message", (m) => {
      clearTimeout(timer);
      resolve({ child, port: (m as { port: number }).port, stop });
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited with ${code} before it listened`));
    });
  });
}

/**
 * The benchmarks' gateway (bench/_static-gateway.ts: the real app with a fixed config), with the Node flags
 * users' gateways get. `script` may name another checkout's copy, for a side-by-side run.
 */
export function startStaticGateway(
  args: string[],
  env: Record<string, string> = {},
  script = "_static-gateway.ts",
): Promise<BenchChild> {
  return startBenchChild(script, args, env, undefined, nodeFlagsFor("gateway/main.ts"));
}

/** Seconds of CPU (user + system) a Linux process has used so far; undefined where /proc is missing. */
export function cpuSeconds(pid: number | undefined): number | undefined {
  return pid === undefined ? undefined : processStat(pid)?.cpuSeconds;
}

/**
 * A Linux process's CPU seconds so far (user + system, all threads) and its main thread's nice value;
 * undefined where /proc is missing or the process has ended.
 */
export function processStat(pid: number): { cpuSeconds: number; nice: number } | undefined {
  if (process.platform !== "linux") return undefined;
  try {
    // Fields after the command name (which may hold spaces) start at state; utime and stime are 14 and 15,
    // nice is 19.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Linux reports in USER_HZ, 100 per second on every architecture Node runs on.
    return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / 100, nice: Number(fields[16]) };
  } catch {
    return undefined;
  }
}

/** A Linux process's resident set size in bytes; undefined where /proc is missing or the process has ended. */
export function rssBytes(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb ? Number(kb) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface Component {
  child: ChildProcess;
  /** The last 20,000 characters it wrote, for a failure message. */
  output: () => string;
  stop: () => Promise<void>;
}

/** A Pomona component (`operator/main.ts` …) as its own process, resolved once its output matches `ready`. */
export async function startComponent(
  script: string,
  env: Record<string, string>,
  ready: RegExp,
  timeoutMs = 120_000,
): Promise<Component> {
  const child = spawn(process.execPath, [...nodeFlagsFor(script), join(import.meta.dirname, "..", script)], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const collect = (c: Buffer) => {
    output = (output + c).slice(-20_000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + timeoutMs;
  while (!ready.test(output)) {
    if (child.exitCode !== null) throw new Error(`${script} exited with ${child.exitCode}:\n${output.slice(-3_000)}`);
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${script} did not print ${ready} within ${timeoutMs} ms:\n${output.slice(-3_000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output: () => output, stop };
}

/** A child's LoopStats since the last ask (bench/_loop-stats.ts); the child must call answerLoopStats(). */
export function askLoopStats(child: ChildProcess): Promise<LoopStats> {
  return new Promise((resolve) => {
    const onMessage = (m: unknown) => {
      const stats = (m as { loopStats?: LoopStats }).loopStats;
      if (!stats) return;
      child.off("message", onMessage);
      resolve(stats);
    };
    child.on("message", onMessage);
    child.send("loop-stats");
  });
}
