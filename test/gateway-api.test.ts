// The gateway's OpenAI API seen through the official openai client: answers, streams, typed errors, allow-lists.
// The upstream is the fake node (test/support/fake-node.ts) so exact usage and model names can be checked;
// real inference through the real node-agent is in gateway-node-agent.test.ts.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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

const ns = "gw-api";
const other = "gw-api-other";
const node = new FakeNode({ name: "mac-a", token: NODE_TOKEN, streamTokens: 4, completionTokens: 7 });
const full = makeKey(ns, "full");
const narrow = makeKey(ns, "narrow", { models: ["small"] }); // an alias of tiny
const bigOnly = makeKey(ns, "big-only", { models: ["big"] });
const expired = makeKey(ns, "expired", { expiresAt: "2020-01-01T00:00:00Z" });
const limited = makeKey(ns, "limited", { rateLimitPolicy: "two-a-minute" });
const foreign = makeKey(other, "foreign");
let gateway: TestGateway;

const client = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${gateway.url}/v1`, maxRetries: 0 });

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  gateway = await startGateway(ns);
  const feed = new ConfigFeed(ns);
  await feed.publish({
    models: [
      model(ns, "tiny", { aliases: ["small"], endpoints: [node.endpoint(ns, "tiny-a")] }),
      model(ns, "big", { endpoints: [node.endpoint(ns, "big-a")], embeddings: false, contextSize: 1024 }),
      model(other, "secret-model", { endpoints: [node.endpoint(other, "s-a")] }),
    ],
    keys: [full, narrow, bigOnly, expired, limited, foreign],
    policies: [policy(ns, "two-a-minute", { requestsPerMinute: 2, scope: "PerKey" })],
  });
  await gateway.waitForVersion(feed.version);
});

afterAll(async () => {
  await gateway?.close();
  await node.kill();
});

describe("the OpenAI API through the official client", () => {
  it("answers a chat completion, naming the model that answered", async () => {
    const { data, response } = await client(full.secret)
      .chat.completions.create({ model: "small", messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    expect(data.choices[0]?.message.content).toBe("from mac-a");
    expect(data.model).toBe("tiny");
    expect(response.headers.get("x-pomona-model")).toBe("tiny");
    expect(data.usage?.completion_tokens).toBe(7);
    const sent = node.seen.at(-1)!;
    expect(sent.path).toBe("/v1/chat/completions");
    expect(sent.authorization).toBe(`Bearer ${NODE_TOKEN}`);
    expect(sent.body.model).toBe("tiny");
  });

  it("streams chunks and drops the usage chunk the client did not ask for", async () => {
    const stream = await client(full.secret).chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe("tok0 tok1 tok2 tok3");
    expect(chunks.every((c) => c.model === "tiny" && c.usage === undefined)).toBe(true);
    // The gateway asked the node for usage anyway, to charge the real tokens.
    expect(node.seen.at(-1)!.body.stream_options).toEqual({ include_usage: true });
  });

  it("streams the usage chunk when the client asks for it", async () => {
    const stream = await client(full.secret).chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({ prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 });
  });

  it("answers a text completion and an embedding", async () => {
    const completion = await client(full.secret).completions.create({ model: "tiny", prompt: "once", max_tokens: 5 });
    expect(completion.choices[0]?.text).toBe(" from mac-a");
    expect(completion.model).toBe("tiny");
    const embedding = await client(full.secret).embeddings.create({ model: "tiny", input: ["a", "b"] });
    expect(embedding.data).toHaveLength(2);
    expect(embedding.model).toBe("tiny");
    expect(node.seen.at(-1)!.path).toBe("/v1/embeddings");
  });

  it("lists only the models the key may use, in its own namespace", async () => {
    const all = [];
    for await (const m of client(full.secret).models.list()) all.push(m.id);
    expect(all.sort()).toEqual(["big", "tiny"]);
    const some = [];
    for await (const m of client(narrow.secret).models.list()) some.push(m.id);
    expect(some).toEqual(["tiny"]);
    const one = await client(full.secret).models.retrieve("small");
    expect(one.id).toBe("tiny");
  });

  it("refuses missing, unknown and expired keys with 401", async () => {
    await expect(client("sk-pomona-not-a-key").models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const err = await client(expired.secret)
      .chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe("expired_api_key");
    const bare = await fetch(`${gateway.url}/v1/models`);
    expect(bare.status).toBe(401);
    expect(((await bare.json()) as { error: { code: string } }).error.code).toBe("missing_api_key");
  });

  it("refuses a model the key may not use with 403, whichever name it is called by", async () => {
    for (const name of ["big"]) {
      const err = await client(narrow.secret)
        .chat.completions.create({ model: name, messages: [{ role: "user", content: "hi" }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError);
      expect((err as InstanceType<typeof OpenAI.APIError>).param).toBe("model");
    }
    // An alias resolves to its model before the check, so it cannot dodge the allowed list.
    const dodge = await client(bigOnly.secret)
      .chat.completions.create({ model: "small", messages: [{ role: "user", content: "hi" }] })
      .catch((e: unknown) => e);
    expect(dodge).toBeInstanceOf(OpenAI.PermissionDeniedError);
    // The allowed list names the alias; the real name reaches the same model, so it is allowed too.
    const ok = await client(narrow.secret).chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
    });
    expect(ok.model).toBe("tiny");
  });

  it("answers 404 for unknown models, including those of another namespace", async () => {
    for (const name of ["nope", "secret-model"]) {
      const err = await client(full.secret)
        .chat.completions.create({ model: name, messages: [{ role: "user", content: "hi" }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.NotFoundError);
      expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe("model_not_found");
    }
  });

  it("answers 400 naming the offending parameter", async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ model: "tiny", messages: [] }, "messages"],
      [{ model: "tiny", messages: [{ role: "user", content: "hi" }], temperature: 9 }, "temperature"],
      [{ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 5000 }, "max_tokens"],
      // tiny has 4096 tokens of context, but one request may hold only 1024 (its sequenceContextSize).
      [{ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 1025 }, "max_tokens"],
      [
        { model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 5, max_completion_tokens: 1025 },
        "max_completion_tokens",
      ],
      [{ model: "tiny", messages: [{ role: "wizard", content: "hi" }] }, "messages[0].role"],
      [{ model: "tiny", messages: [{ role: "user", content: "hi" }], frobnicate: true }, "frobnicate"],
    ];
    for (const [body, param] of cases) {
      const err = await client(full.secret)
        .chat.completions.create(body as never)
        .catch((e: unknown) => e);
      expect(err, JSON.stringify(body)).toBeInstanceOf(OpenAI.BadRequestError);
      expect((err as InstanceType<typeof OpenAI.APIError>).param).toBe(param);
    }
    const legacy = await client(full.secret)
      .completions.create({ model: "tiny", prompt: "hi", max_tokens: 1025 })
      .catch((e: unknown) => e);
    expect(legacy).toBeInstanceOf(OpenAI.BadRequestError);
    expect((legacy as InstanceType<typeof OpenAI.APIError>).param).toBe("max_tokens");
    // As much as one request may hold is fine.
    const most = await client(full.secret).chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      max_completion_tokens: 1024,
    });
    expect(most.choices[0]?.message.content).toBe("from mac-a");
    const embeddings = await client(full.secret)
      .embeddings.create({ model: "big", input: "x" })
      .catch((e: unknown) => e);
    expect(embeddings).toBeInstanceOf(OpenAI.BadRequestError);
  });

  it("answers 429 with retry-after and x-ratelimit headers once the key's limit is spent", async () => {
    const c = client(limited.secret);
    const ask = () => c.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }] });
    await ask();
    await ask();
    const err = await ask().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const headers = (err as InstanceType<typeof OpenAI.APIError>).headers!;
    expect(Number(headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(headers.get("x-ratelimit-limit-requests")).toBe("2");
    expect(headers.get("x-ratelimit-remaining-requests")).toBe("0");
  });

  it("echoes a valid x-request-id and replaces a hostile one", async () => {
    const given = await fetch(`${gateway.url}/v1/models`, {
      headers: { authorization: `Bearer ${full.secret}`, "x-request-id": "trace-123" },
    });
    expect(given.headers.get("x-request-id")).toBe("trace-123");
    const hostile = await fetch(`${gateway.url}/v1/models`, {
      headers: { authorization: `Bearer ${full.secret}`, "x-request-id": 'a b {"level":60}' },
    });
    expect(hostile.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    // The id goes on to the node, so one request can be followed through both logs.
    const chat = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${full.secret}`,
        "content-type": "application/json",
        "x-request-id": "trace-456",
      },
      body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(chat.status).toBe(200);
    expect(node.seen.at(-1)?.requestId).toBe("trace-456");
  });

  it("exports metrics by model, owner and status without any key", async () => {
    const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
    expect(text).toMatch(
      /pomona_gateway_requests_total\{route="\/v1\/chat\/completions",model="tiny",owner="team-full",status="200"\} \d+/,
    );
    expect(text).toMatch(/pomona_gateway_tokens_total\{model="tiny",owner="team-full",direction="completion"\} \d+/);
    expect(text).toMatch(/pomona_gateway_limit_rejections_total\{limit="requests",scope="PerKey"\} 1/);
    expect(text).toMatch(/pomona_gateway_config_version \d+/);
    expect(text).toContain("pomona_gateway_breaker_state");
    expect(text).toContain("pomona_gateway_time_to_first_token_seconds_bucket");
    for (const k of [full, narrow, expired, limited]) {
      expect(text).not.toContain(k.secret);
      expect(text).not.toContain(k.key.hash);
    }
    expect(text).not.toContain(NODE_TOKEN);
  });

  it("is ready once it holds a config", async () => {
    const ready = await fetch(`${gateway.adminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect((await fetch(`${gateway.adminUrl}/healthz`)).status).toBe(200);
  });
});
