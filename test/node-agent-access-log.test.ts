// The node-agent's log: one access line per request, written when the response closes, carrying the
// gateway's request id; no per-request line before the work, and never the node token.
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildApp, createLogger } from "../node-agent/app.ts";
import { createMetrics } from "../node-agent/metrics.ts";

const TOKEN = "access-log-test-token";
let app: FastifyInstance;
let base: string;
const lines: Record<string, unknown>[] = [];
const waiting: { match: (line: Record<string, unknown>) => boolean; resolve: () => void }[] = [];

/** Resolves once a line with this request id was written. */
function lineWritten(requestId: string): Promise<void> {
  const match = (l: Record<string, unknown>) => l.requestId === requestId && l.msg === "request";
  if (lines.some(match)) return Promise.resolve();
  return new Promise((resolve) => waiting.push({ match, resolve }));
}

const accessLines = (requestId: string) => lines.filter((l) => l.requestId === requestId && l.msg === "request");

beforeAll(async () => {
  const capture = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const text of chunk.toString("utf8").split("\n").filter(Boolean)) {
        const line = JSON.parse(text) as Record<string, unknown>;
        lines.push(line);
        for (const w of waiting.filter((x) => x.match(line))) w.resolve();
      }
      done();
    },
  });
  app = buildApp({
    // No replica: an inference call that passed the token gets 404.
    manager: { ready: () => undefined },
    metrics: createMetrics(() => []),
    nodeToken: TOKEN,
    log: createLogger("info", capture),
    isDraining: () => false,
    isReady: () => true,
  });
  await app.listen({ port: 0, host: "127.0.0.1" });
  base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await app.close();
});

const complete = (requestId: string, token: string) =>
  fetch(`${base}/replicas/team-a/stories-1/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", "x-request-id": requestId },
    body: JSON.stringify({ model: "stories", prompt: "Once upon a time", max_tokens: 4 }),
  });

describe("the node-agent's access log", () => {
  it("writes one line per request, with the gateway's request id, the route, the replica and the status", async () => {
    const res = await complete("gw-req.1", TOKEN);
    expect(res.status).toBe(404);
    await res.text();
    await lineWritten("gw-req.1");
    const found = accessLines("gw-req.1");
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({
      method: "POST",
      route: "/replicas/:namespace/:name/v1/completions",
      replica: "team-a/stories-1",
      status: 404,
    });
    expect(found[0]?.ms).toBeGreaterThanOrEqual(0);
    // Fastify's own pair of lines is gone, for this request and every other.
    expect(lines.filter((l) => l.msg === "incoming request" || l.msg === "request completed")).toEqual([]);
  });

  it("logs a refused caller's request without its token", async () => {
    const wrong = "not-the-node-token-secret";
    const res = await complete("gw-req.2", wrong);
    expect(res.status).toBe(401);
    await res.text();
    await lineWritten("gw-req.2");
    expect(accessLines("gw-req.2")).toEqual([expect.objectContaining({ status: 401 })]);
    const written = JSON.stringify(lines);
    expect(written).not.toContain(wrong);
    expect(written).not.toContain(TOKEN);
  });

  it("replaces a request id that is not a plain token, so it cannot inject anything into the log", async () => {
    const res = await fetch(`${base}/healthz`, { headers: { "x-request-id": 'bad" id' } });
    expect(res.status).toBe(200);
    await res.text();
    const id = await new Promise<string>((resolve) => {
      const check = () => {
        const line = lines.find((l) => l.msg === "request" && l.route === "/healthz");
        if (line) resolve(line.requestId as string);
        else waiting.push({ match: (l) => l.msg === "request" && l.route === "/healthz", resolve: check });
      };
      check();
    });
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.stringify(lines)).not.toContain("bad");
  });
});
