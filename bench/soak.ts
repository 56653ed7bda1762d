/**
 * Soak (manual; not in `npm run bench` nor CI): `npm run soak -- --minutes 30`.
 *
 * Runs `npm start`'s own stack (bench/_pomona-up.ts) and, for the given minutes, a mix of clients against
 * its gateway, each a loop of its own: streaming clients that read every answer, non-streaming clients,
 * slow readers that take one chunk at a time with a pause between reads, and clients that cancel a
 * stream once its first text arrives. Then it reports:
 * - RSS growth of the gateway and the node-agent under load: the highest sample (every SAMPLE_SECONDS) in
 *   the last fifth of the load against the highest in the first fifth. Under load RSS rises and falls as V8
 *   fills its heap with garbage and collects it; a leak raises the tops of that cycle, where the cycle alone
 *   moves two single samples apart by as much as its height;
 * - their RSS and live JS heap at rest, each after a full collection forced through the inspector
 *   (bench/_live-heap.ts): cold (before any request), warm (after WARMUP_SECONDS of load, the clients
 *   paused until nothing is in flight) and after the load. Growth at rest is after ÷ warm: the first
 *   requests compile code and grow V8's young generation and the allocator's arenas to their working size
 *   once, which is not growth over time; the cold figure is printed beside it;
 * - leaked sockets and file descriptors: each process's count at rest before the load against its count
 *   at rest after (given up to SETTLE_SECONDS to fall back, e.g. for keep-alive connections to close);
 * - leaked sequences: the node-agent's running requests and queue depth (its /metrics) back to 0, and
 *   the gateway's requests in flight;
 * - answers by kind: 5xx (target: none), busy (429/503) with and without Retry-After, others. A client
 *   that gets a busy answer waits as its Retry-After says (at most MAX_RETRY_WAIT_MS) before asking again.
 *
 *   npm run soak -- --minutes 2      (POMONA_SOAK_* below tune the mix)
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Agent, fetch, type Response } from "undici";
import { BENCH_PROMPT } from "./_bench-model.ts";
import { rssBytes } from "./_child.ts";
import { type LiveHeap, liveHeap } from "./_live-heap.ts";
import { metricSum } from "./_metrics.ts";
import { startPomonaUp } from "./_pomona-up.ts";
import { targetTable } from "./_targets.ts";
import { agentMetricsUrl, gatewayMetricsUrl } from "./_user-config.ts";

const { values } = parseArgs({ options: { minutes: { type: "string", default: "30" } } });
const MINUTES = Number(values.minutes);
if (!(MINUTES > 0)) throw new Error(`--minutes must be a positive number, got ${values.minutes}`);
const count = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const MIX = {
  streaming: count("POMONA_SOAK_STREAMING", 2),
  nonStreaming: count("POMONA_SOAK_NON_STREAMING", 2),
  slow: count("POMONA_SOAK_SLOW", 1),
  cancelled: count("POMONA_SOAK_CANCELLED", 1),
};
const SLOW_READ_PAUSE_MS = 100;
const SAMPLE_SECONDS = 5;
/** Load before the warm measurement at rest; part of the minutes asked. */
const WARMUP_SECONDS = Math.min(60, Math.max(10, MINUTES * 6));
// Longer than the keep-alive an idle pooled connection may be held (Fastify's server keep-alive is 72 s), so
// connections kept for reuse have closed and what is left is a leak.
const SETTLE_SECONDS = 90;
/** The longest a client waits after a busy answer, whatever its Retry-After says. */
const MAX_RETRY_WAIT_MS = 10_000;
const RSS_GROWTH_TARGET = 0.05;

interface Answers {
  ok: number;
  busyWithRetryAfter: number;
  busyWithoutRetryAfter: number;
  /** By status, the gateway's error code and the kind of client. */
  serverErrors: Map<string, number>;
  otherStatus: Map<string, number>;
  networkErrors: number;
  firstNetworkError: string | undefined;
  cancelled: number;
}
const answers: Answers = {
  ok: 0,
  busyWithRetryAfter: 0,
  busyWithoutRetryAfter: 0,
  serverErrors: new Map(),
  otherStatus: new Map(),
  networkErrors: 0,
  firstNetworkError: undefined,
  cancelled: 0,
};
const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

/** Counts the answer's status; true if it is a 200 whose body the caller should read (else it is read here). */
async function tally(res: Response, kind: string): Promise<boolean> {
  if (res.status === 200) {
    answers.ok++;
    return true;
  }
  const text = await res.text().catch(() => "");
  const what = `${res.status} ${/"code":"([a-z_]+)"/.exec(text)?.[1] ?? "(no code)"} (${kind})`;
  if (res.status === 429 || res.status === 503) {
    const retryAfter = Number(res.headers.get("retry-after") ?? Number.NaN);
    if (Number.isFinite(retryAfter)) answers.busyWithRetryAfter++;
    else answers.busyWithoutRetryAfter++;
    if (res.status === 503) bump(answers.otherStatus, what);
    // A well-behaved client waits as told (or a second when not told) before it asks again.
    await sleep(Math.min(MAX_RETRY_WAIT_MS, Number.isFinite(retryAfter) ? retryAfter * 1000 : 1000));
  } else if (res.status >= 500) bump(answers.serverErrors, what);
  else bump(answers.otherStatus, what);
  return false;
}

interface Descriptors {
  fds: number;
  sockets: number;
  /** Sockets by what they are: "listening :port", "in on :port" (accepted), "out to :port", "other". */
  kinds: Map<string, number>;
}

/** TCP sockets of a process's network namespace by inode: state, local and remote port (/proc/<pid>/net/tcp*). */
function tcpByInode(pid: number): Map<string, { state: string; local: number; remote: number }> {
  const byInode = new Map<string, { state: string; local: number; remote: number }>();
  for (const table of ["tcp", "tcp6"]) {
    let text = "";
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const port = (address: string) => Number.parseInt(address.split(":")[1] ?? "0", 16);
      byInode.set(f[9] as string, { state: f[3] as string, local: port(f[1] as string), remote: port(f[2] as string) });
    }
  }
  return byInode;
}

function descriptors(pid: number | undefined): Descriptors | undefined {
  if (pid === undefined) return undefined;
  try {
    const fds = readdirSync(`/proc/${pid}/fd`);
    const inodes = fds.flatMap((fd) => {
      try {
        const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
        return link.startsWith("socket:[") ? [link.slice(8, -1)] : [];
      } catch {
        return [];
      }
    });
    const tcp = tcpByInode(pid);
    const listening = new Set([...tcp.values()].filter((t) => t.state === "0A").map((t) => t.local));
    const kinds = new Map<string, number>();
    for (const inode of inodes) {
      const t = tcp.get(inode);
      const kind = !t
        ? "other"
        : t.state === "0A"
          ? `listening :${t.local}`
          : listening.has(t.local)
            ? `in on :${t.local}`
            : `out to :${t.remote}`;
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
    return { fds: fds.length, sockets: inodes.length, kinds };
  } catch {
    return undefined;
  }
}

/** The kinds of socket there are more of after than before, e.g. "+1 out to :8090". */
function extraSockets(before: Descriptors | undefined, after: Descriptors | undefined): string {
  if (!before || !after) return "–";
  const extra = [...after.kinds]
    .map(([kind, n]) => [kind, n - (before.kinds.get(kind) ?? 0)] as const)
    .filter(([, d]) => d > 0)
    .map(([kind, d]) => `+${d} ${kind}`);
  return extra.length ? extra.join(", ") : "none";
}

const up = await startPomonaUp();
const pids = up.pids();
if (!pids.gateway || !pids.agent) {
  await up.stop();
  throw new Error(`could not find the gateway (${pids.gateway}) and node-agent (${pids.agent}) processes of pomona up`);
}
const headers = { authorization: `Bearer ${up.key}`, "content-type": "application/json" };
const chatBody = (stream: boolean, maxTokens: number) =>
  JSON.stringify({
    model: up.model,
    messages: [{ role: "user", content: BENCH_PROMPT }],
    max_tokens: maxTokens,
    stream,
  });
const randomTokens = () => 16 + Math.floor(Math.random() * 112);

type Client = (until: number) => Promise<void>;
// The clients' own connection pool, closed when the load ends so their sockets do not count as the gateway's.
const clientAgent = new Agent({ connections: 64 });
const post = (body: string, signal?: AbortSignal) =>
  fetch(`${up.gatewayUrl}/v1/chat/completions`, { method: "POST", headers, body, signal, dispatcher: clientAgent });
const guarded =
  (one: () => Promise<void>): Client =>
  async (until) => {
    while (Date.now() < until) {
      try {
        await one();
      } catch (err) {
        answers.networkErrors++;
        answers.firstNetworkError ??= (err as Error).message;
        await sleep(100);
      }
    }
  };
const streaming = guarded(async () => {
  const res = await post(chatBody(true, randomTokens()));
  if (await tally(res, "streaming")) await res.text();
});
const nonStreaming = guarded(async () => {
  const res = await post(chatBody(false, randomTokens()));
  if (await tally(res, "non-streaming")) await res.json();
});
const slowReader = guarded(async () => {
  const res = await post(chatBody(true, 128));
  if (!(await tally(res, "slow reader")) || !res.body) return;
  const reader = res.body.getReader();
  while (!(await reader.read()).done) await sleep(SLOW_READ_PAUSE_MS);
});
const canceller = guarded(async () => {
  const abort = new AbortController();
  const res = await post(chatBody(true, 200), abort.signal);
  if (!(await tally(res, "cancelling")) || !res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!/"content":"[^"]/.test(text)) {
    const { value, done } = await reader.read();
    if (done) return;
    text += decoder.decode(value, { stream: true });
  }
  abort.abort();
  answers.cancelled++;
  await reader.cancel().catch(() => {});
});

const mb = (b: number | undefined) => (b === undefined ? "–" : (b / 2 ** 20).toFixed(1));
const heapChange = (b: LiveHeap | undefined, e: LiveHeap | undefined) =>
  b && e ? `${mb(b.heapUsed)} → ${mb(e.heapUsed)} (${mb(b.external)} → ${mb(e.external)})` : "unreadable";
/** RSS at rest after a full collection, after the load against warm: what the process kept. */
const restGrowth = (b: LiveHeap | undefined, e: LiveHeap | undefined) => (b && e ? (e.rss - b.rss) / b.rss : undefined);
const pct = (n: number) => `${(100 * n).toFixed(1)}%`;
/** The highest sample in each fifth of the run, in order. */
const fifthPeaks = (samples: number[]) =>
  samples.length < 5
    ? []
    : [0, 1, 2, 3, 4].map((f) =>
        Math.max(...samples.slice(Math.floor((f * samples.length) / 5), Math.floor(((f + 1) * samples.length) / 5))),
      );

async function busyNow() {
  return {
    running: await metricSum(agentMetricsUrl(up.agentUrl), "pomona_node_running_requests", up.agentCa),
    queued: await metricSum(agentMetricsUrl(up.agentUrl), "pomona_node_queue_depth", up.agentCa),
    inFlight: await metricSum(gatewayMetricsUrl(up.gatewayAdminUrl), "pomona_gateway_requests_in_flight"),
  };
}
type Busy = Awaited<ReturnType<typeof busyNow>>;
const idle = (b: Busy) => b.running === 0 && b.queued === 0 && b.inFlight === 0;

const runClients = (until: number) =>
  Promise.all(
    [
      ...Array.from({ length: MIX.streaming }, () => streaming),
      ...Array.from({ length: MIX.nonStreaming }, () => nonStreaming),
      ...Array.from({ length: MIX.slow }, () => slowReader),
      ...Array.from({ length: MIX.cancelled }, () => canceller),
    ].map((c) => c(until)),
  );

try {
  await sleep(2_000);
  const heapCold = { gateway: await liveHeap(pids.gateway), agent: await liveHeap(pids.agent) };
  const before = { gateway: descriptors(pids.gateway), agent: descriptors(pids.agent) };
  const started = Date.now();
  const until = started + MINUTES * 60_000;

  // Warm-up, then a pause until nothing is in flight for the warm measurement at rest.
  await runClients(started + WARMUP_SECONDS * 1000);
  const quietBy = Date.now() + SETTLE_SECONDS * 1000;
  let quiet = await busyNow();
  while (!idle(quiet) && Date.now() < quietBy) {
    await sleep(200);
    quiet = await busyNow();
  }
  const heapWarm = { gateway: await liveHeap(pids.gateway), agent: await liveHeap(pids.agent) };

  const rss = { gateway: [] as number[], agent: [] as number[] };
  let peakBusySequences = 0;
  const sampler = (async () => {
    // The forced collection emptied the heaps, and the load refills them for minutes: a short run's growth
    // under load is that refill (a 1-minute run: ~50 %), so only a run of many minutes grades it.
    await sleep(WARMUP_SECONDS * 1000);
    while (Date.now() < until) {
      const g = rssBytes(pids.gateway);
      const a = rssBytes(pids.agent);
      if (g !== undefined) rss.gateway.push(g);
      if (a !== undefined) rss.agent.push(a);
      peakBusySequences = Math.max(
        peakBusySequences,
        (await metricSum(agentMetricsUrl(up.agentUrl), "pomona_node_running_requests", up.agentCa)) ?? 0,
      );
      await sleep(SAMPLE_SECONDS * 1000);
    }
  })();
  await Promise.all([runClients(until), sampler]);
  const loadSeconds = (Date.now() - started) / 1000;
  await clientAgent.close();

  // At rest again: sequences, requests in flight and descriptors back where they were.
  const settleBy = Date.now() + SETTLE_SECONDS * 1000;
  let busy: Busy;
  let after = { gateway: descriptors(pids.gateway), agent: descriptors(pids.agent) };
  const settled = () =>
    idle(busy) &&
    (after.gateway?.sockets ?? Infinity) <= (before.gateway?.sockets ?? 0) &&
    (after.agent?.sockets ?? Infinity) <= (before.agent?.sockets ?? 0);
  do {
    await sleep(1_000);
    busy = await busyNow();
    after = { gateway: descriptors(pids.gateway), agent: descriptors(pids.agent) };
  } while (!settled() && Date.now() < settleBy);
  const { running, queued, inFlight } = busy;
  const heapAfter = { gateway: await liveHeap(pids.gateway), agent: await liveHeap(pids.agent) };

  const growth = (samples: number[]) => {
    const peaks = fifthPeaks(samples);
    const first = peaks[0];
    const last = peaks[4];
    if (first === undefined || last === undefined) return undefined;
    return { first, last, peaks, peak: Math.max(...peaks), growth: (last - first) / first };
  };
  const g = growth(rss.gateway);
  const a = growth(rss.agent);
  const rg = restGrowth(heapWarm.gateway, heapAfter.gateway);
  const ra = restGrowth(heapWarm.agent, heapAfter.agent);
  const fivexx = [...answers.serverErrors.values()].reduce((s, n) => s + n, 0);
  const list = (m: Map<string, number>) =>
    m.size === 0
      ? "none"
      : [...m]
          .sort()
          .map(([k, n]) => `${n} × ${k}`)
          .join(", ");
  const leaked = (b?: Descriptors, e?: Descriptors) =>
    b && e ? { sockets: e.sockets - b.sockets, fds: e.fds - b.fds } : undefined;
  const gl = leaked(before.gateway, after.gateway);
  const al = leaked(before.agent, after.agent);
  console.log(`### Soak: ${MINUTES} minute(s) of mixed clients against \`npm start\`'s stack

${new Date().toISOString()}; ${loadSeconds.toFixed(0)} s of load. Clients, each a loop: ${MIX.streaming} streaming (read to the end), ${MIX.nonStreaming} non-streaming, ${MIX.slow} slow reader (a pause of ${SLOW_READ_PAUSE_MS} ms after each read), ${MIX.cancelled} cancelling once the first text arrives; chat completions of 16–128 tokens (slow: 128, cancelled: up to 200) from the quickstart model, with a key whose limits never bind. Node-agent threads as its default picked them (the replica's status.threads): ${up.agentThreads ?? "not reported"}. A warm-up of ${WARMUP_SECONDS} s of load, a pause until nothing was in flight (the warm measurement at rest), then the load again, with RSS sampled every ${SAMPLE_SECONDS} s after its first ${WARMUP_SECONDS} s; the most sequences busy at a sample: ${peakBusySequences}.

| answers | count |
|---|---|
| 200 | ${answers.ok} |
| busy (429/503) with Retry-After | ${answers.busyWithRetryAfter} |
| busy (429/503) without Retry-After | ${answers.busyWithoutRetryAfter} |
| 5xx | ${list(answers.serverErrors)} |
| other statuses (and the 503s among the busy) | ${list(answers.otherStatus)} |
| network errors (not counting the cancels) | ${answers.networkErrors}${answers.firstNetworkError ? ` (first: ${answers.firstNetworkError})` : ""} |
| streams cancelled by the client | ${answers.cancelled} |

| process | RSS under load, highest in the first fifth MiB | in the last fifth MiB | growth | RSS at rest, after a full GC: cold, warm → after the load MiB | growth | live heap at rest: warm → after MiB | sockets / fds at rest before | after |
|---|---|---|---|---|---|---|---|---|
| gateway | ${mb(g?.first)} | ${mb(g?.last)} | ${g ? pct(g.growth) : "–"} | ${mb(heapCold.gateway?.rss)}, ${mb(heapWarm.gateway?.rss)} → ${mb(heapAfter.gateway?.rss)} (before the GC: ${mb(heapAfter.gateway?.rssBefore)}) | ${rg === undefined ? "–" : pct(rg)} | ${heapChange(heapWarm.gateway, heapAfter.gateway)} | ${before.gateway?.sockets ?? "–"} / ${before.gateway?.fds ?? "–"} | ${after.gateway?.sockets ?? "–"} / ${after.gateway?.fds ?? "–"} |
| node-agent | ${mb(a?.first)} | ${mb(a?.last)} | ${a ? pct(a.growth) : "–"} | ${mb(heapCold.agent?.rss)}, ${mb(heapWarm.agent?.rss)} → ${mb(heapAfter.agent?.rss)} (before the GC: ${mb(heapAfter.agent?.rssBefore)}) | ${ra === undefined ? "–" : pct(ra)} | ${heapChange(heapWarm.agent, heapAfter.agent)} | ${before.agent?.sockets ?? "–"} / ${before.agent?.fds ?? "–"} | ${after.agent?.sockets ?? "–"} / ${after.agent?.fds ?? "–"} |

RSS at rest and live heap: each process at rest right after a full collection forced through the inspector, cold (before any request), warm (after the warm-up) and after the load; growth at rest is after ÷ warm. The live heap is V8's used heap then, with external memory (Buffers and native objects V8 tracks) in brackets. Under load, RSS also holds the garbage V8 lets build up between full collections, so it rises and falls; growth under load compares the tops of that cycle, the highest sample of the last fifth of the samples against that of the first.

Highest RSS under load in each fifth of the samples, MiB: gateway ${g ? g.peaks.map(mb).join(" → ") : "–"}; node-agent ${a ? a.peaks.map(mb).join(" → ") : "–"}.

Sockets at rest after the load that were not there before: gateway ${extraSockets(before.gateway, after.gateway)}; node-agent ${extraSockets(before.agent, after.agent)} (ports: gateway ${new URL(up.gatewayUrl).port}, node-agent ${new URL(up.agentUrl).port}; others are the API server's or Redis's).

After the load (given up to ${SETTLE_SECONDS} s): node-agent running requests ${running ?? "unreadable"}, queue depth ${queued ?? "unreadable"}; gateway requests in flight ${inFlight ?? "unreadable"}.

${targetTable([
  {
    target: `gateway RSS growth under load < ${pct(RSS_GROWTH_TARGET)}`,
    measured: g ? pct(g.growth) : "too few samples",
    met: g ? g.growth < RSS_GROWTH_TARGET : undefined,
  },
  {
    target: `node-agent RSS growth under load < ${pct(RSS_GROWTH_TARGET)}`,
    measured: a ? pct(a.growth) : "too few samples",
    met: a ? a.growth < RSS_GROWTH_TARGET : undefined,
  },
  {
    target: `gateway RSS growth at rest, after a full GC, < ${pct(RSS_GROWTH_TARGET)}`,
    measured: rg === undefined ? "unreadable" : pct(rg),
    met: rg === undefined ? undefined : rg < RSS_GROWTH_TARGET,
  },
  {
    target: `node-agent RSS growth at rest, after a full GC, < ${pct(RSS_GROWTH_TARGET)}`,
    measured: ra === undefined ? "unreadable" : pct(ra),
    met: ra === undefined ? undefined : ra < RSS_GROWTH_TARGET,
  },
  {
    target: "no leaked sockets (at rest, after − before)",
    measured: `gateway ${gl?.sockets ?? "–"}, node-agent ${al?.sockets ?? "–"} (fds: ${gl?.fds ?? "–"}, ${al?.fds ?? "–"})`,
    met: gl && al ? gl.sockets <= 0 && al.sockets <= 0 : undefined,
  },
  {
    target: "no leaked sequences (node-agent busy sequences and queue back to 0)",
    measured: `running ${running ?? "–"}, queued ${queued ?? "–"}`,
    met: running === undefined || queued === undefined ? undefined : running === 0 && queued === 0,
  },
  { target: "zero 5xx", measured: String(fivexx), met: fivexx === 0 },
])}`);
} finally {
  await up.stop();
}
