/**
 * Load shapes for the HTTP benchmarks: one request at a time, closed loop (N always in flight: the most
 * a target serves) and open loop (requests sent on a fixed schedule whatever the answers do).
 *
 * Open loop measures each request from the time it was scheduled to be sent, not from when it was
 * really sent: if the target (or the load generator) falls behind, the wait shows in the latency
 * instead of silently slowing the schedule (coordinated omission). Requests go out from a 1 ms timer in
 * batches of those due; a request due while MAX_IN_FLIGHT are already out is counted as dropped, which
 * bounds memory when a target stalls.
 */
import { Pool } from "undici";
import { type BenchChild, cpuSeconds, startBenchChild, startStaticGateway } from "./_child.ts";
import { BENCH_NODE_TOKEN, benchKey, generousPolicy, staticGatewaySpec } from "./_gateway-config.ts";

export interface HttpTarget {
  label: string;
  pool: Pool;
  path: string;
  headers: Record<string, string>;
  body: string;
  /** The process doing the proxying, whose CPU time may be counted; none for the direct calls. */
  pid?: number;
}

export async function send(target: HttpTarget): Promise<void> {
  const res = await target.pool.request({
    method: "POST",
    path: target.path,
    headers: target.headers,
    body: target.body,
  });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${target.label} answered ${res.statusCode}: ${text.slice(0, 200)}`);
}

/** Latencies in ms of requests one at a time, after a warm-up; stops at `count` or after `maxSeconds`. */
export async function sequential(target: HttpTarget, count: number, maxSeconds: number, warmup: number) {
  const warmupEnd = performance.now() + 2_000;
  for (let i = 0; i < warmup && performance.now() < warmupEnd; i++) await send(target);
  const out: number[] = [];
  const end = performance.now() + maxSeconds * 1000;
  for (let i = 0; i < count && performance.now() < end; i++) {
    const started = performance.now();
    await send(target);
    out.push(performance.now() - started);
  }
  return out;
}

/** Requests per second with `connections` requests always in flight for `seconds`. */
export async function closedLoopRate(target: HttpTarget, connections: number, seconds: number): Promise<number> {
  const started = performance.now();
  const deadline = started + seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < deadline) {
        await send(target);
        done++;
      }
    }),
  );
  return done / ((performance.now() - started) / 1000);
}

export interface OpenLoopResult {
  /** ms from each request's scheduled send time to the end of its answer. */
  latencies: number[];
  scheduled: number;
  /** Not sent because MAX_IN_FLIGHT were already out. */
  dropped: number;
  failed: number;
  firstError: string | undefined;
  /** Answers per second over the schedule's length. */
  achievedRate: number;
}

export const MAX_IN_FLIGHT = 2_048;

/**
 * The slots the gateway is told the stand-in upstream has. The stand-in is not a model: it answers at once
 * and has no sequences to run out of, so it must never be what limits a benchmark. A real endpoint's slots
 * are its replica's parallel sequences (64 here once made an open-loop run end in 429 model_queue_full when
 * the machine stalled and answers piled up, which measured the line, not the gateway). No load shape here
 * has more than MAX_IN_FLIGHT requests out at once, so the stand-in's slots can never fill.
 */
export const STAND_IN_SLOTS = MAX_IN_FLIGHT;

/** `rate` requests per second for `seconds`, on schedule; resolves when every answer is in. */
export async function openLoop(target: HttpTarget, rate: number, seconds: number): Promise<OpenLoopResult> {
  const total = Math.max(1, Math.round(rate * seconds));
  const interval = 1000 / rate;
  const latencies: number[] = [];
  let sent = 0;
  let inFlight = 0;
  let dropped = 0;
  let failed = 0;
  let firstError: string | undefined;
  const start = performance.now() + 5;
  const done = new Promise<void>((resolve) => {
    const settle = () => {
      if (sent + dropped === total && inFlight === 0) resolve();
    };
    const fire = (scheduledAt: number) => {
      inFlight++;
      send(target)
        .then(
          () => {
            latencies.push(performance.now() - scheduledAt);
          },
          (err: Error) => {
            failed++;
            firstError ??= err.message;
          },
        )
        .finally(() => {
          inFlight--;
          settle();
        });
    };
    const tick = () => {
      const now = performance.now();
      while (sent + dropped < total && start + (sent + dropped) * interval <= now) {
        const scheduledAt = start + (sent + dropped) * interval;
        if (inFlight >= MAX_IN_FLIGHT) dropped++;
        else {
          sent++;
          fire(scheduledAt);
        }
      }
      if (sent + dropped < total) setTimeout(tick, 1);
      else settle();
    };
    setTimeout(tick, 5);
  });
  await done;
  return {
    latencies,
    scheduled: total,
    dropped,
    failed,
    firstError,
    achievedRate: latencies.length / seconds,
  };
}

/** The key the gateway benchmarks send; its policy never refuses (bench/_gateway-config.ts). */
export const BENCH_API_KEY = "sk-pomona-bench";

/** A short chat completion for the stand-in upstream, streamed or not. */
export const chatBody = (stream = false) =>
  JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "Say hello." }], max_tokens: 16, stream });

/** A chat-completions target on loopback: `connections` is the most the pool opens at once. */
export function chatTarget(parts: {
  label: string;
  port: number;
  authorization: string;
  body: string;
  connections: number;
  path?: string;
  pid?: number;
}): HttpTarget {
  return {
    label: parts.label,
    pool: new Pool(`http://127.0.0.1:${parts.port}`, { connections: parts.connections }),
    path: parts.path ?? "/v1/chat/completions",
    headers: { "content-type": "application/json", authorization: parts.authorization },
    body: parts.body,
    pid: parts.pid,
  };
}

/**
 * The gateway benchmarks' set-up: the fast stand-in upstream (bench/_overhead-upstream.ts) and one real
 * gateway in front of it per entry of `gateways` (limits in Redis when it names a URL, else in memory),
 * each its own process, with the model `tiny` and the benchmark key.
 */
export async function startUpstreamAndGateways(
  gateways: { redisUrl?: string }[] = [{}],
  options: { loopStats?: boolean } = {},
) {
  // With loopStats each child answers "loop-stats" (bench/_loop-stats.ts).
  const env: Record<string, string> = options.loopStats ? { POMONA_BENCH_LOOP_STATS: "1" } : {};
  const upstream = await startBenchChild("_overhead-upstream.ts", [], env);
  const upstreamBase = `http://127.0.0.1:${upstream.port}/replicas/bench/tiny-a`;
  const started: BenchChild[] = [];
  for (const { redisUrl } of gateways) {
    const spec = staticGatewaySpec({
      model: "tiny",
      endpoint: upstreamBase,
      contextSize: 4096,
      slots: STAND_IN_SLOTS,
      keys: [benchKey(BENCH_API_KEY, generousPolicy.name)],
      policies: [generousPolicy],
      redisUrl,
    });
    started.push(await startStaticGateway([JSON.stringify(spec)], env));
  }
  return {
    upstream,
    /** Where the upstream serves the model's OpenAI routes (`${upstreamBase}/v1/...`). */
    upstreamBase,
    gateways: started,
    /** The upstream called directly, as the gateway calls it. */
    direct: (body: string, connections: number) =>
      chatTarget({
        label: "direct",
        port: upstream.port,
        path: "/replicas/bench/tiny-a/v1/chat/completions",
        authorization: `Bearer ${BENCH_NODE_TOKEN}`,
        body,
        connections,
      }),
    /** Through a gateway, whose process's CPU time may be counted. */
    through: (gateway: BenchChild, label: string, body: string, connections: number) =>
      chatTarget({
        label,
        port: gateway.port,
        authorization: `Bearer ${BENCH_API_KEY}`,
        body,
        connections,
        pid: gateway.child.pid,
      }),
    stop: async () => {
      for (const g of started) await g.stop();
      await upstream.stop();
    },
  };
}

/** closedLoopRate, and the requests per CPU-second of the target's process (undefined without one). */
export async function closedLoopRateAndCpu(
  target: HttpTarget,
  connections: number,
  seconds: number,
): Promise<{ rps: number; perCpuSecond: number | undefined }> {
  const before = cpuSeconds(target.pid);
  const started = performance.now();
  const rps = await closedLoopRate(target, connections, seconds);
  const elapsed = (performance.now() - started) / 1000;
  const after = cpuSeconds(target.pid);
  const cpu = before !== undefined && after !== undefined ? after - before : undefined;
  return { rps, perCpuSecond: cpu ? (rps * elapsed) / cpu : undefined };
}
