// CORS on the gateway as deployed: the gateway process (gateway/main.ts) with POMONA_GATEWAY_CORS_ORIGINS, over
// real HTTP. There is no browser on these machines, so the browser's part is played by fetch: a preflight is
// an OPTIONS request with the headers a browser sends, and the header names come from what the official
// openai client really sends. The upstream is the fake node (test/support/fake-node.ts).
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadSettings } from "../gateway/config.ts";
import { PREFLIGHT_MAX_AGE_SECONDS } from "../gateway/cors.ts";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  makeKey,
  model,
  NODE_TOKEN,
  policy,
  startGateway,
  type TestGateway,
} from "./support/gateway.ts";
import { type GatewayProcess, startGatewayProcess } from "./support/gateway-process.ts";

const ns = "gw-cors";
const APP = "https://app.example.com";
const DEV = "http://localhost:5173";
const node = new FakeNode({ name: "mac-cors", token: NODE_TOKEN, streamTokens: 3, completionTokens: 4 });
const key = makeKey(ns, "browser");
const limited = makeKey(ns, "limited", { rateLimitPolicy: "one-a-minute" });
let gateway: GatewayProcess;
/** The same app with CORS left at its default: off. */
let plain: TestGateway;

const preflight = (url: string, origin: string, requestHeaders = "authorization, content-type") =>
  fetch(url, {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": requestHeaders,
    },
  });

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  const feed = new ConfigFeed(ns);
  await feed.publish({
    models: [model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")] })],
    keys: [key, limited],
    policies: [policy(ns, "one-a-minute", { requestsPerMinute: 1, scope: "PerKey" })],
  });
  // Ready once it holds the config published above.
  gateway = await startGatewayProcess(ns, { POMONA_GATEWAY_CORS_ORIGINS: `${APP}, ${DEV}/` });
  plain = await startGateway(ns);
  await plain.waitForVersion(feed.version);
});

afterAll(async () => {
  await plain?.close();
  await gateway?.process.stop();
  await node.kill();
});

const auth = (origin?: string, secret = key.secret): RequestInit => ({
  headers: { authorization: `Bearer ${secret}`, ...(origin ? { origin } : {}) },
});

describe("CORS on the inference routes", () => {
  it("answers a preflight from an allowed origin before authentication, echoing the exact origin", async () => {
    for (const origin of [APP, DEV]) {
      const answer = await preflight(`${gateway.url}/v1/chat/completions`, origin);
      expect(answer.status).toBe(204);
      expect(answer.headers.get("access-control-allow-origin")).toBe(origin);
      expect(answer.headers.get("access-control-allow-methods")).toContain("POST");
      expect(answer.headers.get("access-control-allow-headers")).toBe("authorization, content-type");
      expect(answer.headers.get("access-control-max-age")).toBe(String(PREFLIGHT_MAX_AGE_SECONDS));
      expect(answer.headers.get("vary")).toBe("Origin");
      expect(answer.headers.get("access-control-allow-credentials")).toBeNull();
    }
  });

  it("allows every header the openai client sends, and Anthropic's, and no others", async () => {
    const sent: string[] = [];
    const client = new OpenAI({
      apiKey: key.secret,
      baseURL: `${gateway.url}/v1`,
      maxRetries: 0,
      fetch: async (url, init) => {
        sent.push(...new Headers(init?.headers).keys());
        return fetch(url, init);
      },
    });
    await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }] });
    // What a browser would put in its preflight: the headers the page sets that are not CORS-safelisted
    // (accept is; the browser sets user-agent and content-length itself).
    const requested = [...new Set(sent)].filter((h) => !["accept", "content-length", "user-agent"].includes(h));
    expect(requested).toEqual(expect.arrayContaining(["authorization", "content-type", "x-stainless-lang"]));
    const extra = ["x-api-key", "anthropic-version", "anthropic-dangerous-direct-browser-access", "x-evil"];
    const answer = await preflight(`${gateway.url}/v1/messages`, APP, [...requested, ...extra].join(", "));
    expect(answer.status).toBe(204);
    const allowed = answer.headers.get("access-control-allow-headers")!.split(", ");
    expect(allowed).toEqual([...requested, ...extra.filter((h) => h !== "x-evil")]);
  });

  it("refuses a preflight from another origin: no CORS header, so the browser blocks the call", async () => {
    for (const origin of ["https://evil.example.com", "null", `${APP}.evil.com`, "http://app.example.com"]) {
      const answer = await preflight(`${gateway.url}/v1/chat/completions`, origin);
      expect(answer.headers.get("access-control-allow-origin"), origin).toBeNull();
      expect(answer.headers.get("vary")).toBe("Origin");
    }
    const read = await fetch(`${gateway.url}/v1/models`, auth("https://evil.example.com"));
    expect(read.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("marks answers, streams and errors to an allowed origin so the page can read them", async () => {
    const list = await fetch(`${gateway.url}/v1/models`, auth(APP));
    expect(list.status).toBe(200);
    expect(list.headers.get("access-control-allow-origin")).toBe(APP);
    expect(list.headers.get("access-control-expose-headers")).toContain("x-request-id");
    expect(list.headers.get("vary")).toBe("Origin");

    const stream = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: { ...auth(APP).headers, "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], stream: true }),
    });
    expect(stream.headers.get("content-type")).toContain("text/event-stream");
    expect(stream.headers.get("access-control-allow-origin")).toBe(APP);
    expect(await stream.text()).toContain("[DONE]");

    const anonymous = await fetch(`${gateway.url}/v1/models`, { headers: { origin: APP } });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("access-control-allow-origin")).toBe(APP);

    const bad = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: { ...auth(APP).headers, "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny", messages: [], n: 2 }),
    });
    expect(bad.status).toBe(400);
    expect(bad.headers.get("access-control-allow-origin")).toBe(APP);

    const ask = () =>
      fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        headers: { ...auth(APP, limited.secret).headers, "content-type": "application/json" },
        body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }] }),
      });
    expect((await ask()).status).toBe(200);
    const throttled = await ask();
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get("access-control-allow-origin")).toBe(APP);
    expect(throttled.headers.get("access-control-expose-headers")).toContain("retry-after");
    expect(Number(throttled.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
  });

  it("never answers cross-origin on the admin port", async () => {
    const metrics = await fetch(`${gateway.adminUrl}/metrics`, { headers: { origin: APP } });
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get("access-control-allow-origin")).toBeNull();
    const asked = await preflight(`${gateway.adminUrl}/metrics`, APP);
    expect(asked.headers.get("access-control-allow-origin")).toBeNull();
    expect(asked.headers.get("access-control-allow-methods")).toBeNull();
  });

  it("is off by default: no CORS header and no Vary, for a preflight or a call", async () => {
    const asked = await preflight(`${plain.url}/v1/chat/completions`, APP);
    expect(asked.status).toBe(404);
    expect(asked.headers.get("access-control-allow-origin")).toBeNull();
    const list = await fetch(`${plain.url}/v1/models`, auth(APP));
    expect(list.status).toBe(200);
    expect(list.headers.get("access-control-allow-origin")).toBeNull();
    expect(list.headers.get("vary")).toBeNull();
  });

  it("refuses a setting that is not a list of origins, naming the variable", () => {
    const env = { POMONA_NODE_TOKEN: "t" };
    expect(loadSettings({ ...env, POMONA_GATEWAY_CORS_ORIGINS: `${APP}, ${DEV}/` }).corsOrigins).toEqual([APP, DEV]);
    expect(loadSettings(env).corsOrigins).toEqual([]);
    expect(loadSettings({ ...env, POMONA_GATEWAY_CORS_ORIGINS: "*" }).corsOrigins).toEqual(["*"]);
    for (const bad of [`${APP}/app`, "app.example.com", "ftp://files.example.com", `${APP}?x=1`]) {
      expect(() => loadSettings({ ...env, POMONA_GATEWAY_CORS_ORIGINS: bad }), bad).toThrow(
        /POMONA_GATEWAY_CORS_ORIGINS: .* is not an origin/,
      );
    }
  });
});
