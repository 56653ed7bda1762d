// The gateway's public edge: metrics and probes only on the internal port (and `pomona status` reading them
// there), slow-header sockets closed after the header timeout, a per-address connection cap, X-Forwarded-For
// believed only from a trusted proxy, and a bounded answer from a node that sends far too much.
import { execFile } from "node:child_process";
import { createServer, request, type Server } from "node:http";
import { type AddressInfo, connect, type Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { installCrds, repoRoot } from "./support/crds.ts";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  makeKey,
  model,
  NODE_TOKEN,
  startGateway,
  type TestGateway,
} from "./support/gateway.ts";
import { type GatewayProcess, residentBytes, startGatewayProcess } from "./support/gateway-process.ts";
import { eventually } from "./support/processes.ts";

const ns = "gw-edge";
const key = makeKey(ns, "edge");
const node = new FakeNode({ name: "edge-node", token: NODE_TOKEN });

/**
 * A stand-in for a node that misbehaves in ways Pomona's own node-agent does not (so it is faked here, and
 * said so): it answers a chat with 1 GiB of JSON, or streams one SSE event that never ends.
 */
let floodBytesSent = 0;
let flood: Server;
async function startFlood(): Promise<number> {
  flood = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      const streaming = req.url?.includes("stream") ?? false;
      res.writeHead(200, { "content-type": streaming ? "text/event-stream" : "application/json" });
      res.write(streaming ? "data: " : '{"pad":"');
      let left = 1024;
      const pump = () => {
        while (left > 0 && !res.destroyed) {
          left--;
          floodBytesSent += chunk.length;
          if (!res.write(chunk)) return void res.once("drain", pump);
        }
        if (!res.destroyed) res.end(streaming ? "\n\n" : '"}');
      };
      pump();
    });
  });
  await new Promise<void>((resolve) => flood.listen(0, "127.0.0.1", resolve));
  return (flood.address() as AddressInfo).port;
}

let gateway: TestGateway;
let proc: GatewayProcess;
const feed = new ConfigFeed(ns);

beforeAll(async () => {
  await installCrds();
  await createNamespace(ns);
  await node.start();
  const floodPort = await startFlood();
  const floodEndpoint = (replica: string) => ({
    url: `http://127.0.0.1:${floodPort}/replicas/${ns}/${replica}`,
    replica,
    node: "flood-node",
    weight: 1,
    slots: 4,
  });
  const config = await feed.publish({
    models: [
      model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")] }),
      model(ns, "flood", { endpoints: [floodEndpoint("flood-a")] }),
      // The stand-in tells a stream from a JSON answer by the replica's name in the path.
      model(ns, "flood-stream", { endpoints: [floodEndpoint("stream-a")] }),
    ],
    keys: [key],
  });
  // In process, with the header timeout lowered to a second so the slow-client test is quick.
  gateway = await startGateway(ns, {
    clients: {
      headersTimeoutMs: 1_000,
      requestTimeoutMs: 2_000,
      keepAliveTimeoutMs: 5_000,
      maxConnectionsPerClient: 1_000,
      trustedProxies: [],
    },
  });
  await gateway.waitForVersion(config.version);
  // As deployed (its own process, defaults but for the cap and the trusted proxy): the connection cap,
  // X-Forwarded-For in its access log, and its memory under a flood.
  proc = await startGatewayProcess(ns, {
    POMONA_GATEWAY_MAX_CONNECTIONS_PER_CLIENT: "3",
    POMONA_GATEWAY_TRUSTED_PROXIES: "127.0.0.9",
  });
}, 120_000);

afterAll(async () => {
  await proc?.process.stop();
  await gateway?.close();
  await node.kill();
  await new Promise<void>((resolve) => flood?.close(() => resolve()));
});

const chat = (base: string, modelName: string, extra: Record<string, unknown> = {}) =>
  fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
    body: JSON.stringify({ model: modelName, messages: [{ role: "user", content: "hi" }], ...extra }),
  });

/** A raw connection from a chosen loopback address (all of 127.0.0.0/8 is this machine on Linux). */
function openFrom(base: string, localAddress: string): Promise<Socket> {
  const { port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port: Number(port), localAddress }, () => resolve(socket));
    socket.once("error", reject);
  });
}

/** What the server writes on a socket until it closes it. */
function readUntilClosed(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    socket.on("data", (c: Buffer) => {
      text += c.toString("utf8");
    });
    socket.on("error", () => {});
    socket.once("close", () => resolve(text));
  });
}

/** GET /v1/models from a chosen loopback address, optionally with X-Forwarded-For. */
function getModels(base: string, localAddress: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}/v1/models`,
      { localAddress, headers: { authorization: `Bearer ${key.secret}`, ...headers }, agent: false },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

describe("metrics and probes", () => {
  it("are not on the public port: /metrics, /healthz and /readyz answer 404 in OpenAI's shape", async () => {
    for (const path of ["/metrics", "/healthz", "/readyz"]) {
      const res = await fetch(`${gateway.url}${path}`);
      expect(res.status, path).toBe(404);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("unknown_url");
    }
  });

  it("are on the internal port, with breakers named by replica and node and no URL, key or prompt in any label", async () => {
    expect(
      (await chat(gateway.url, "tiny", { messages: [{ role: "user", content: "prompt-marker-42" }] })).status,
    ).toBe(200);
    expect((await fetch(`${gateway.adminUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${gateway.adminUrl}/readyz`)).status).toBe(200);
    const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
    expect(text).toMatch(/pomona_gateway_breaker_state\{model="gw-edge\/tiny",replica="tiny-a",node="edge-node"\} 0/);
    const labels = text
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .join("\n");
    expect(labels).not.toMatch(/https?:\/\//);
    expect(labels).not.toContain("127.0.0.1");
    expect(labels).not.toContain(key.secret);
    expect(labels).not.toContain("prompt-marker-42");
  });

  it("pomona status shows the breakers it reads from the internal port", async () => {
    // Freshly installed CRDs can answer 429 for a moment while their storage initializes: ask again.
    const stdout = await eventually("pomona status", async () => {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [join(repoRoot, "cli/pomona.ts"), "status", "--kubeconfig", inject("kubeconfig"), "-n", ns],
        { env: { ...process.env, POMONA_GATEWAY_ADMIN_URL: gateway.adminUrl } },
      );
      return stdout;
    });
    expect(stdout).toMatch(/^gw-edge\/tiny\s+tiny-a\s+edge-node\s+closed$/m);
    expect(stdout).not.toContain("http://");
  });
});

describe("slow clients", () => {
  it("300 sockets that dribble their headers are all closed (408) after the header timeout", {
    timeout: 120_000,
  }, async () => {
    const sockets = await Promise.all(Array.from({ length: 300 }, () => openFrom(gateway.url, "127.0.0.1")));
    const closed = sockets.map(readUntilClosed);
    const timers = sockets.map((socket, i) => {
      socket.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: pomona\r\nX-Dribble-${i}: `);
      // One byte every 200 ms: the connection is never idle, the headers never end.
      return setInterval(() => {
        if (!socket.destroyed) socket.write("a");
      }, 200);
    });
    try {
      const answers = await Promise.race([
        Promise.all(closed),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error("slow-header sockets still open after 45 s")), 45_000),
        ),
      ]);
      expect(answers).toHaveLength(300);
      // Each told why, in OpenAI's error shape, before the close.
      expect(answers.filter((a) => a.startsWith("HTTP/1.1 408") && a.includes('"code":"request_timeout"')).length).toBe(
        300,
      );
    } finally {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
    }
    // The gateway is fine afterwards.
    expect((await chat(gateway.url, "tiny")).status).toBe(200);
  });

  it("caps open connections per client address with a 429, and frees a slot when one closes", async () => {
    const held = await Promise.all([1, 2, 3].map(() => openFrom(proc.url, "127.0.0.7")));
    const fourth = await openFrom(proc.url, "127.0.0.7");
    const answer = await readUntilClosed(fourth);
    expect(answer).toMatch(/^HTTP\/1\.1 429 /);
    expect(answer).toMatch(/retry-after: 1/i);
    expect(answer).toContain('"code":"too_many_connections"');
    // Another address is not affected.
    expect(await getModels(proc.url, "127.0.0.8")).toBe(200);
    // A trusted proxy carries many clients: not capped.
    const viaProxy = await Promise.all([1, 2, 3, 4, 5].map(() => getModels(proc.url, "127.0.0.9")));
    expect(viaProxy).toEqual([200, 200, 200, 200, 200]);
    for (const s of held) s.destroy();
    await eventually("a slot for 127.0.0.7 again", async () =>
      (await getModels(proc.url, "127.0.0.7").catch(() => 0)) === 200 ? true : undefined,
    );
    const metrics = await (await fetch(`${proc.adminUrl}/metrics`)).text();
    expect(Number(metrics.match(/^pomona_gateway_connections_refused_total (\d+)/m)?.[1])).toBeGreaterThanOrEqual(1);
  });

  it("believes X-Forwarded-For only from a trusted proxy, and logs the address it believes", async () => {
    const logged = async (requestId: string) => {
      const line = (await proc.process.waitFor(new RegExp(`^.*"requestId":"${requestId}".*$`, "m"), 30_000))[0];
      return (JSON.parse(line) as { client?: string }).client;
    };
    await getModels(proc.url, "127.0.0.9", { "x-forwarded-for": "203.0.113.7", "x-request-id": "xff-trusted" });
    expect(await logged("xff-trusted")).toBe("203.0.113.7");
    await getModels(proc.url, "127.0.0.8", { "x-forwarded-for": "203.0.113.7", "x-request-id": "xff-untrusted" });
    expect(await logged("xff-untrusted")).toBe("127.0.0.8");
  });
});

describe("large answers", () => {
  it("a node answering 1 GiB gets the client a 502 upstream_response_too_large, and the gateway's memory stays bounded", {
    timeout: 180_000,
  }, async () => {
    const pid = proc.process.child.pid!;
    expect((await chat(proc.url, "tiny")).status).toBe(200);
    const before = await residentBytes(pid);
    let peak = before;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await residentBytes(pid).catch(() => 0));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const res = await chat(proc.url, "flood");
    sampling = false;
    await sampler;
    expect(res.status).toBe(502);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("upstream_response_too_large");
    // The default cap is 46 MiB; the old one held up to 256 MiB. The node's socket was closed early.
    console.info(`gateway RSS: ${(before / 2 ** 20).toFixed(0)} MiB before, peak ${(peak / 2 ** 20).toFixed(0)} MiB`);
    expect(peak - before).toBeLessThan(160 * 2 ** 20);
    expect(floodBytesSent).toBeLessThan(1024 * 2 ** 20);
    // The gateway still serves.
    expect((await chat(proc.url, "tiny")).status).toBe(200);
  });

  it("a stream event that never ends ends the stream with an upstream_response_too_large error event", async () => {
    const res = await chat(proc.url, "flood-stream", { stream: true });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text.length).toBeLessThan(64 * 1024);
    expect(text).toContain('"code":"upstream_response_too_large"');
  });
});
