/**
 * Where a process's latency tail comes from, seen from inside it: the event loop's delay (how late a timer
 * due every 1 ms ran, from perf_hooks.monitorEventLoopDelay) and its garbage-collection pauses (the 'gc'
 * performance entries: scavenges of the young generation and mark-compacts of the old). A benchmark child
 * calls `answerLoopStats()`; the parent asks with the IPC message "loop-stats", which also starts a new
 * interval, and gets a LoopStats back.
 */
import { constants, monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks";
import { getHeapSpaceStatistics } from "node:v8";

const spaceMB = (name: string, pick: "space_size" | "space_used_size") =>
  (getHeapSpaceStatistics().find((s) => s.space_name === name)?.[pick] ?? 0) / 2 ** 20;

export interface LoopStats {
  /** Event-loop delay in ms over the interval. */
  delay: { p50: number; p99: number; max: number };
  /** Scavenges (young generation) and other collections (mark-compact, incremental marking, weak callbacks). */
  gc: {
    scavenges: number;
    scavengeMs: number;
    scavengeMaxMs: number;
    others: number;
    otherMs: number;
    otherMaxMs: number;
  };
  /** Seconds the interval lasted, and CPU seconds this process used in it. */
  seconds: number;
  cpuSeconds: number;
  /** The young generation's size at the end (MB) and how much the old generation's use grew (MB). */
  heap: { youngMB: number; oldGrowthMB: number };
}

export function answerLoopStats(): void {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  let gc = emptyGc();
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as { detail?: { kind?: number } }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) {
        gc.scavenges++;
        gc.scavengeMs += e.duration;
        gc.scavengeMaxMs = Math.max(gc.scavengeMaxMs, e.duration);
      } else {
        gc.others++;
        gc.otherMs += e.duration;
        gc.otherMaxMs = Math.max(gc.otherMaxMs, e.duration);
      }
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  let since = performance.now();
  let cpuSince = process.cpuUsage();
  let oldSince = spaceMB("old_space", "space_used_size");
  process.on("message", (m) => {
    if (m !== "loop-stats") return;
    const ns = (p: number) => delay.percentile(p) / 1e6;
    const cpu = process.cpuUsage(cpuSince);
    const stats: LoopStats = {
      delay: { p50: ns(50), p99: ns(99), max: delay.max / 1e6 },
      gc,
      seconds: (performance.now() - since) / 1000,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      heap: {
        youngMB: spaceMB("new_space", "space_size"),
        oldGrowthMB: spaceMB("old_space", "space_used_size") - oldSince,
      },
    };
    process.send?.({ loopStats: stats });
    delay.reset();
    gc = emptyGc();
    since = performance.now();
    cpuSince = process.cpuUsage();
    oldSince = spaceMB("old_space", "space_used_size");
  });
}

function emptyGc(): LoopStats["gc"] {
  return { scavenges: 0, scavengeMs: 0, scavengeMaxMs: 0, others: 0, otherMs: 0, otherMaxMs: 0 };
}
