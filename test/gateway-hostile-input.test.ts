// Malformed and hostile requests each get the right 4xx in OpenAI's error shape, reach no node, and the
// gateway keeps serving. The node behind it is the fake node (test/support/fake-node.ts): it only has to
// show which requests got through.
import { connect } from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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

const ns = "gw-hostile";
const node = new FakeNode({ name: "mac-h", token: NODE_TOKEN });
const key = makeKey(ns, "k");
const BODY_LIMIT = 64 * 1024;
let gateway: TestGateway;

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  gateway = await startGateway(ns, { bodyLimitBytes: BODY_LIMIT });
  const feed = new ConfigFeed(ns);
  await feed.publish({
    models: [model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")], contextSize: 2048 })],
    keys: [key],
  });
  await gateway.waitForVersion(feed.version);
});

afterAll(async () => {
  await gateway?.close();
  await node.kill();
});

const valid = { model: "tiny", messages: [{ role: "user", content: "hi" }] };
const withValid = (extra: Record<string, unknown>) => JSON.stringify({ ...valid, ...extra });
const message = (m: Record<string, unknown>) => JSON.stringify({ ...valid, messages: [m] });

interface Case {
  name: string;
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  status: number;
  param?: string | null;
}

const auth = () => ({ authorization: `Bearer ${key.secret}`, "content-type": "application/json" });

const cases = (): Case[] => [
  {
    name: "no authorization",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(valid),
    status: 401,
  },
  {
    name: "empty bearer",
    headers: { authorization: "Bearer ", "content-type": "application/json" },
    body: JSON.stringify(valid),
    status: 401,
  },
  {
    name: "basic auth",
    headers: { authorization: `Basic ${Buffer.from("a:b").toString("base64")}`, "content-type": "application/json" },
    body: JSON.stringify(valid),
    status: 401,
  },
  {
    name: "two tokens",
    headers: { authorization: `Bearer ${key.secret} extra`, "content-type": "application/json" },
    body: JSON.stringify(valid),
    status: 401,
  },
  {
    name: "a 10k token",
    headers: { authorization: `Bearer ${"x".repeat(10_000)}`, "content-type": "application/json" },
    body: JSON.stringify(valid),
    status: 401,
  },
  {
    name: "the key's hash as key",
    headers: { authorization: `Bearer ${key.key.hash}`, "content-type": "application/json" },
    body: JSON.stringify(valid),
    status: 401,
  },
  {
    name: "unauthenticated huge body",
    headers: { "content-type": "application/json" },
    body: "x".repeat(BODY_LIMIT * 2),
    status: 401,
  },
  { name: "truncated JSON", headers: auth(), body: '{"model":', status: 400, param: null },
  { name: "empty body", headers: auth(), body: "", status: 400 },
  { name: "JSON array", headers: auth(), body: "[]", status: 400 },
  { name: "JSON string", headers: auth(), body: '"hi"', status: 400 },
  { name: "JSON null", headers: auth(), body: "null", status: 400 },
  {
    name: "text/plain body",
    headers: { ...auth(), "content-type": "text/plain" },
    body: JSON.stringify(valid),
    status: 415,
  },
  { name: "body over the limit", headers: auth(), body: withValid({ user: "x".repeat(BODY_LIMIT) }), status: 413 },
  {
    name: "missing model",
    headers: auth(),
    body: JSON.stringify({ messages: valid.messages }),
    status: 400,
    param: "model",
  },
  { name: "model a number", headers: auth(), body: withValid({ model: 7 }), status: 400, param: "model" },
  { name: "empty model", headers: auth(), body: withValid({ model: "" }), status: 400, param: "model" },
  {
    name: "10k-char model",
    headers: auth(),
    body: withValid({ model: "m".repeat(10_000) }),
    status: 400,
    param: "model",
  },
  {
    name: "model with a NUL byte",
    headers: auth(),
    body: withValid({ model: "tiny\u0000" }),
    status: 404,
    param: "model",
  },
  {
    name: "messages an object",
    headers: auth(),
    body: withValid({ messages: { role: "user" } }),
    status: 400,
    param: "messages",
  },
  { name: "no messages", headers: auth(), body: withValid({ messages: [] }), status: 400, param: "messages" },
  {
    name: "message without role",
    headers: auth(),
    body: message({ content: "hi" }),
    status: 400,
    param: "messages[0].role",
  },
  {
    name: "unknown role",
    headers: auth(),
    body: message({ role: "root", content: "hi" }),
    status: 400,
    param: "messages[0].role",
  },
  {
    name: "content a number",
    headers: auth(),
    body: message({ role: "user", content: 42 }),
    status: 400,
    param: "messages[0].content",
  },
  {
    name: "image content",
    headers: auth(),
    body: message({ role: "user", content: [{ type: "image_url", image_url: { url: "http://x" } }] }),
    status: 400,
  },
  { name: "unknown field", headers: auth(), body: withValid({ admin: true }), status: 400, param: "admin" },
  {
    name: "unknown field in a message",
    headers: auth(),
    body: message({ role: "user", content: "hi", sudo: 1 }),
    status: 400,
    param: "messages[0].sudo",
  },
  {
    name: "__proto__ pollution",
    headers: auth(),
    body: `{"model":"tiny","messages":[{"role":"user","content":"hi"}],"__proto__":{"admin":true}}`,
    status: 400,
  },
  {
    name: "constructor pollution",
    headers: auth(),
    body: withValid({ constructor: { prototype: { admin: true } } }),
    status: 400,
  },
  { name: "max_tokens 0", headers: auth(), body: withValid({ max_tokens: 0 }), status: 400, param: "max_tokens" },
  {
    name: "max_tokens negative",
    headers: auth(),
    body: withValid({ max_tokens: -1 }),
    status: 400,
    param: "max_tokens",
  },
  {
    name: "max_tokens absurd",
    headers: auth(),
    body: withValid({ max_tokens: 1e12 }),
    status: 400,
    param: "max_tokens",
  },
  {
    name: "max_tokens fractional",
    headers: auth(),
    body: withValid({ max_tokens: 1.5 }),
    status: 400,
    param: "max_tokens",
  },
  {
    name: "max_tokens a string",
    headers: auth(),
    body: withValid({ max_tokens: "100" }),
    status: 400,
    param: "max_tokens",
  },
  {
    name: "max_tokens over the context",
    headers: auth(),
    body: withValid({ max_tokens: 5000 }),
    status: 400,
    param: "max_tokens",
  },
  {
    name: "temperature a string",
    headers: auth(),
    body: withValid({ temperature: "hot" }),
    status: 400,
    param: "temperature",
  },
  {
    name: "temperature infinite",
    headers: auth(),
    body: withValid({}).replace(/}$/, ',"temperature":1e999}'),
    status: 400,
    param: "temperature",
  },
  { name: "n = 9", headers: auth(), body: withValid({ n: 9 }), status: 400, param: "n" },
  { name: "stream a string", headers: auth(), body: withValid({ stream: "yes" }), status: 400, param: "stream" },
  {
    name: "unknown stream option",
    headers: auth(),
    body: withValid({ stream: true, stream_options: { x: 1 } }),
    status: 400,
    param: "stream_options.x",
  },
  {
    name: "five stop words",
    headers: auth(),
    body: withValid({ stop: ["a", "b", "c", "d", "e"] }),
    status: 400,
    param: "stop",
  },
  {
    name: "deeply nested JSON",
    headers: auth(),
    body: withValid({}).replace(/}$/, `,"user":${"[".repeat(5000)}${"]".repeat(5000)}}`),
    status: 400,
  },
  {
    name: "empty embedding input",
    path: "/v1/embeddings",
    headers: auth(),
    body: JSON.stringify({ model: "tiny", input: [] }),
    status: 400,
    param: "input",
  },
  {
    name: "embedding input a number",
    path: "/v1/embeddings",
    headers: auth(),
    body: JSON.stringify({ model: "tiny", input: 5 }),
    status: 400,
    param: "input",
  },
  {
    name: "two prompts",
    path: "/v1/completions",
    headers: auth(),
    body: JSON.stringify({ model: "tiny", prompt: ["a", "b"] }),
    status: 400,
    param: "prompt",
  },
  { name: "unknown path", path: "/v1/fine_tuning/jobs", headers: auth(), body: "{}", status: 404 },
  {
    name: "GET on a POST route",
    path: "/v1/chat/completions",
    method: "GET",
    headers: { authorization: `Bearer ${key.secret}` },
    status: 404,
  },
  {
    name: "path traversal",
    path: "/v1/../../etc/passwd",
    method: "GET",
    headers: { authorization: `Bearer ${key.secret}` },
    status: 404,
  },
];

/** Raw HTTP, for requests fetch refuses to send. Resolves with the status code of the answer. */
function rawRequest(text: string): Promise<number> {
  const { port } = new URL(gateway.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1");
    let data = "";
    socket.on("data", (c) => {
      data += c;
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      if (m) {
        resolve(Number(m[1]));
        socket.destroy();
      }
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error(`closed without an answer: ${data}`)));
    socket.write(text);
  });
}

describe("hostile and malformed requests", () => {
  it("answers each with the right 4xx and OpenAI's error shape, and lets none through to a node", async () => {
    const before = node.seen.length;
    const list = cases();
    expect(list.length).toBeGreaterThanOrEqual(40);
    for (const c of list) {
      const response = await fetch(`${gateway.url}${c.path ?? "/v1/chat/completions"}`, {
        method: c.method ?? "POST",
        headers: c.headers,
        body: c.body,
      });
      const text = await response.text();
      expect(response.status, `${c.name}: ${text}`).toBe(c.status);
      const body = JSON.parse(text) as { error: { message: string; type: string; param: string | null; code: string } };
      expect(typeof body.error.message, c.name).toBe("string");
      expect(typeof body.error.type, c.name).toBe("string");
      expect(typeof body.error.code, c.name).toBe("string");
      if (c.param !== undefined) expect(body.error.param, c.name).toBe(c.param);
      expect(text, c.name).not.toContain(key.secret);
    }
    expect(node.seen.length).toBe(before);
  });

  it("refuses smuggling and header injection at the HTTP layer", async () => {
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key.secret}\r\nContent-Type: application/json\r\n`;
    const body = JSON.stringify(valid);
    const statuses = [
      await rawRequest(`${head}Content-Length: ${body.length}\r\nContent-Length: 5\r\n\r\n${body}`),
      await rawRequest(`${head}Content-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`),
      await rawRequest(`${head}X-Request-Id: a\nInjected: yes\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
      await rawRequest(`${head}X-Request-Id: ${"r".repeat(20_000)}\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
    ];
    for (const s of statuses) expect(s).toBeGreaterThanOrEqual(400);
    for (const s of statuses) expect(s).toBeLessThan(500);
  });

  it("never answers 5xx to any JSON body, and keeps serving", async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), async (value) => {
        const response = await fetch(`${gateway.url}/v1/chat/completions`, {
          method: "POST",
          headers: auth(),
          body: JSON.stringify(value),
        });
        await response.text();
        return response.status === 400;
      }),
      { numRuns: 150 },
    );
    const ok = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: auth(),
      body: JSON.stringify(valid),
    });
    expect(ok.status).toBe(200);
    expect((await fetch(`${gateway.adminUrl}/healthz`)).status).toBe(200);
  });
});
