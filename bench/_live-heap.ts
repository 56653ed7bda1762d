/**
 * A Node process's live JS heap: its inspector is opened (SIGUSR1, on loopback), a full garbage collection
 * forced through it, process.memoryUsage() read, and the inspector closed again. RSS alone cannot tell a
 * leak from V8 letting a heap full of garbage grow before its next full collection; the heap that is left
 * after a full collection can. For benchmarks only: it stops the process for the collection.
 */
import { setTimeout as sleep } from "node:timers/promises";

export interface LiveHeap {
  /** After the forced full collection, in bytes. */
  heapUsed: number;
  external: number;
  rss: number;
  /** RSS just before it: what the collection gave back. */
  rssBefore: number;
}

const INSPECTOR_PORT = 9229;

/** Undefined when the inspector cannot be reached (another process holds its port, or the process is gone). */
export async function liveHeap(pid: number): Promise<LiveHeap | undefined> {
  try {
    process.kill(pid, "SIGUSR1");
  } catch {
    return undefined;
  }
  let target: string | undefined;
  for (let i = 0; i < 50 && !target; i++) {
    const list = (await fetch(`http://127.0.0.1:${INSPECTOR_PORT}/json/list`)
      .then((r) => r.json())
      .catch(() => [])) as { webSocketDebuggerUrl?: string }[];
    target = list[0]?.webSocketDebuggerUrl;
    if (!target) await sleep(100);
  }
  if (!target) return undefined;
  const socket = new WebSocket(target);
  try {
    await new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener("error", reject, { once: true });
    });
    let lastId = 0;
    const waiting = new Map<number, (result: unknown) => void>();
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown };
      if (message.id !== undefined) waiting.get(message.id)?.(message.result);
    });
    const call = (method: string, params: object = {}) =>
      new Promise<unknown>((resolve) => {
        const id = ++lastId;
        waiting.set(id, resolve);
        socket.send(JSON.stringify({ id, method, params }));
      });
    const memoryUsage = async () => {
      const reply = (await call("Runtime.evaluate", {
        expression: "JSON.stringify(process.memoryUsage())",
        returnByValue: true,
      })) as { result?: { value?: string } };
      return JSON.parse(reply.result?.value ?? "{}") as NodeJS.MemoryUsage;
    };
    const before = await memoryUsage();
    await call("HeapProfiler.collectGarbage");
    const after = await memoryUsage();
    // The session ends with the inspector, so no answer may come: waited for a moment at most.
    await Promise.race([
      call("Runtime.evaluate", { expression: "process.getBuiltinModule('node:inspector').close()" }),
      sleep(1_000),
    ]);
    return { heapUsed: after.heapUsed, external: after.external, rss: after.rss, rssBefore: before.rss };
  } catch {
    return undefined;
  } finally {
    socket.close();
  }
}
