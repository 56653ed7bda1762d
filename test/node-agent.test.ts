// The node-agent for real: a child process against the real API server, loading the real tiny model with
// llama.cpp, answered through the official openai client. The test plays the operator: it creates the
// ModelReplicas bound to the agent's node with kubectl, as the operator would.
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from "node:http";
import { join } from "node:path";
import { CoordinationV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig, Watch } from "@kubernetes/client-node";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  annotations,
  type EngineSettings,
  GROUP,
  inferenceNodeTaint,
  labels,
  type ModelReplica,
  type ModelSource,
  modelMemoryResource,
  nodeCancel,
  VERSION,
} from "../crds/api/index.ts";
import { installCrds } from "./support/crds.ts";
import { createNamespace, kubeConfig } from "./support/gateway.ts";
import { kubectlOk } from "./support/kubectl.ts";
import {
  type ModelHost,
  NODE_AGENT_TOKEN,
  startAgent,
  startModelHost,
  type TestAgent,
  tinyModel,
  tinyModelSha256,
} from "./support/node-agent.ts";
import { eventually } from "./support/processes.ts";

const ns = "node-agent-test";
const nodeName = "pomona-test-mac-a";
let agent: TestAgent;
let host: ModelHost;
let kc: KubeConfig;
const phasesSeen = new Map<string, string[]>();
let stopWatch: AbortController | undefined;
let watching = true;

/**
 * Records every phase each replica passes through, as `kubectl get -w` would show them. The watch is
 * restarted when the API server ends it (a freshly installed CRD can answer 429 for a moment).
 */
function recordPhases(): void {
  const retry = () => {
    if (watching) setTimeout(recordPhases, 200);
  };
  new Watch(kc)
    .watch(
      `/apis/${GROUP}/${VERSION}/namespaces/${ns}/modelreplicas`,
      {},
      (_type: string, r: ModelReplica) => {
        const name = r.metadata?.name ?? "";
        const phase = r.status?.phase;
        const seen = phasesSeen.get(name) ?? [];
        if (phase && seen.at(-1) !== phase) seen.push(phase);
        phasesSeen.set(name, seen);
      },
      retry,
    )
    .then((controller) => {
      stopWatch = controller;
    }, retry);
}

function replicaManifest(name: string, source: ModelSource, engine: Partial<EngineSettings> = {}): string {
  return JSON.stringify({
    apiVersion: `${GROUP}/${VERSION}`,
    kind: "ModelReplica",
    metadata: { name, namespace: ns, labels: { [labels.model]: "stories" } },
    spec: {
      model: "stories",
      nodeName,
      source,
      engine: { contextSize: 2048, parallelSequences: 8, embeddings: true, ...engine },
      memoryBytes: 0,
      templateHash: "test",
    },
  });
}

async function createReplica(name: string, source: ModelSource, engine: Partial<EngineSettings> = {}) {
  await kubectlOk(["apply", "-f", "-"], replicaManifest(name, source, engine));
}

async function readReplica(name: string): Promise<ModelReplica> {
  return (await kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace: ns,
    plural: "modelreplicas",
    name,
  })) as ModelReplica;
}

async function waitForPhase(name: string, phase: string, timeoutMs = 90_000): Promise<ModelReplica> {
  return eventually(
    `${name} ${phase}`,
    async () => {
      const r = await readReplica(name);
      return r.status?.phase === phase ? r : undefined;
    },
    timeoutMs,
  );
}

async function metricsText(): Promise<string> {
  return (await fetch(`${agent.url}/metrics`)).text();
}

/** The value of one metric line whose labels include the replica's name. */
function metricValue(text: string, metric: string, replica: string, extra = ""): number {
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`${metric}{`) && l.includes(`replica="${replica}"`) && l.includes(extra));
  return line ? Number(line.split(" ").at(-1)) : Number.NaN;
}

function client(replica: string): OpenAI {
  return new OpenAI({
    apiKey: NODE_AGENT_TOKEN,
    baseURL: `${agent.url}/replicas/${ns}/${replica}/v1`,
    maxRetries: 0,
  });
}

beforeAll(async () => {
  kc = kubeConfig();
  await installCrds();
  await createNamespace(ns);
  host = await startModelHost();
  recordPhases();
  // The model host is a loopback stand-in: allowed as an origin, as an administrator would list a mirror.
  agent = await startAgent(nodeName, { NODE_EXTRA_CA_CERTS: host.caFile, POMONA_MODEL_ALLOWED_HOSTS: host.url });
  await createReplica("story-a", { path: tinyModel });
  await waitForPhase("story-a", "Ready");
}, 180_000);

afterAll(async () => {
  watching = false;
  stopWatch?.abort();
  await agent?.process.stop();
  await host?.close();
});

describe("node presence", () => {
  it("registers a virtual Node with Pomona's labels, the taint, model memory and a Ready condition", async () => {
    const node = await kc.makeApiClient(CoreV1Api).readNode({ name: nodeName });
    expect(node.metadata?.labels?.[labels.inferenceNode]).toBe("true");
    expect(node.metadata?.labels?.[labels.accelerator]).toBe(process.platform === "darwin" ? "metal" : "cpu");
    expect(node.metadata?.labels?.[labels.nodeMode]).toBe("virtual");
    expect(node.metadata?.labels?.[labels.chip]).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]*$/);
    expect(Number(node.metadata?.labels?.[labels.unifiedMemory])).toBeGreaterThan(0);
    expect(node.spec?.taints).toContainEqual(expect.objectContaining(inferenceNodeTaint));
    expect(node.status?.allocatable?.[modelMemoryResource]).toBe(String(1024 ** 3));
    expect(node.status?.capacity?.[modelMemoryResource]).toBe(String(1024 ** 3));
    expect(node.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
  });

  it("renews its Lease in kube-node-lease", async () => {
    const leases = kc.makeApiClient(CoordinationV1Api);
    const first = await leases.readNamespacedLease({ name: nodeName, namespace: "kube-node-lease" });
    expect(first.spec?.holderIdentity).toBe(nodeName);
    // The test agent renews every second (test/support/node-agent.ts); the Lease lasts four renewals.
    expect(first.spec?.leaseDurationSeconds).toBe(4);
    const firstRenew = new Date(first.spec?.renewTime ?? 0).getTime();
    await eventually("a newer renewTime", async () => {
      const next = await leases.readNamespacedLease({ name: nodeName, namespace: "kube-node-lease" });
      return new Date(next.spec?.renewTime ?? 0).getTime() > firstRenew ? true : undefined;
    });
  });

  it("answers /healthz and /readyz without a token", async () => {
    expect((await fetch(`${agent.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${agent.url}/readyz`)).status).toBe(200);
  });
});

describe("a replica from a local path", () => {
  it("goes Pending, Loading, Ready with its endpoint and measured figures", async () => {
    const r = await readReplica("story-a");
    expect(phasesSeen.get("story-a")).toEqual(["Pending", "Loading", "Ready"]);
    expect(r.status?.endpoint).toBe(`http://127.0.0.1:${agent.port}/replicas/${ns}/story-a`);
    expect(r.status?.observedGeneration).toBe(r.metadata.generation);
    expect(r.status?.tokensPerSecond).toBeGreaterThan(0);
    expect(r.status?.memoryBytes).toBeGreaterThan(0);
    expect(r.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
  });

  it("serves a chat completion with real token usage through the openai client", async () => {
    const answer = await client("story-a").chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: "Tell me a story about a cat." }],
      max_tokens: 24,
      temperature: 0,
    });
    expect(answer.object).toBe("chat.completion");
    expect(answer.choices[0]?.message.role).toBe("assistant");
    expect(answer.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(answer.usage?.prompt_tokens).toBeGreaterThan(5);
    expect(answer.usage?.completion_tokens).toBeGreaterThan(0);
    expect(answer.usage?.completion_tokens).toBeLessThanOrEqual(24);
    expect(answer.usage?.total_tokens).toBe(
      (answer.usage?.prompt_tokens ?? 0) + (answer.usage?.completion_tokens ?? 0),
    );
  });

  it("serves a completion that honours max_tokens, seed and stop", async () => {
    const c = client("story-a");
    const long = await c.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 16 });
    expect(long.object).toBe("text_completion");
    expect(long.usage?.completion_tokens).toBe(16);
    expect(long.choices[0]?.finish_reason).toBe("length");
    const seeded = () =>
      c.completions.create({ model: "stories", prompt: "Once upon a time", max_tokens: 20, temperature: 1, seed: 7 });
    expect((await seeded()).choices[0]?.text).toBe((await seeded()).choices[0]?.text);
    const stopped = await c.completions.create({
      model: "stories",
      prompt: "Once upon a time",
      max_tokens: 200,
      temperature: 0,
      stop: ["."],
    });
    expect(stopped.choices[0]?.text).not.toContain(".");
    expect(stopped.choices[0]?.finish_reason).toBe("stop");
  });

  it("streams chat chunks, the usage chunk when asked, and [DONE]", async () => {
    const stream = await client("story-a").chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: "Once upon a time" }],
      max_tokens: 30,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    let finish: string | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? "";
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) {
        usage = chunk.usage;
        expect(chunk.choices).toEqual([]);
      }
    }
    expect(chunks).toBeGreaterThan(3);
    expect(text.length).toBeGreaterThan(0);
    expect(finish).toMatch(/^(stop|length)$/);
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    expect(usage?.total_tokens).toBe((usage?.prompt_tokens ?? 0) + (usage?.completion_tokens ?? 0));
  });

  it("writes one access line for a streamed answer, with the request id the gateway sent", async () => {
    const requestId = "gw-stream-access-line.1";
    const stream = await client("story-a").completions.create(
      { model: "stories", prompt: "Once upon a time", max_tokens: 8, stream: true },
      { headers: { "x-request-id": requestId } },
    );
    for await (const _ of stream) {
      // Read to the end: the line is written when the response closes.
    }
    await agent.process.waitFor(new RegExp(`"requestId":"${requestId}"`));
    const lines = agent.process
      .output()
      .split("\n")
      .filter((l) => l.includes(requestId))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      expect.objectContaining({
        msg: "request",
        route: "/replicas/:namespace/:name/v1/completions",
        replica: `${ns}/story-a`,
        status: 200,
      }),
    ]);
  });

  it("serves embeddings with token usage", async () => {
    const result = await client("story-a").embeddings.create({
      model: "stories",
      input: ["a little cat", "a big dog"],
      encoding_format: "float",
    });
    expect(result.data).toHaveLength(2);
    expect(result.data[0]?.embedding.length).toBeGreaterThan(8);
    expect(result.data[0]?.embedding).not.toEqual(result.data[1]?.embedding);
    expect(result.usage.prompt_tokens).toBeGreaterThan(2);
  });

  it("lists its model at /v1/models", async () => {
    const models = await client("story-a").models.list();
    expect(models.data.map((m) => m.id)).toEqual(["stories"]);
  });

  it("runs 8 concurrent streams in one context, all to the end", async () => {
    const c = client("story-a");
    const streams = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        c.completions
          .create({
            model: "stories",
            prompt: "Once upon a time",
            max_tokens: 120,
            temperature: 0.9,
            seed: i,
            stream: true,
            stream_options: { include_usage: true },
          })
          .then(async (s) => {
            let tokens = 0;
            let finish: string | null | undefined;
            for await (const chunk of s) {
              if (chunk.usage) tokens = chunk.usage.completion_tokens;
              if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
            }
            return { tokens, finish };
          }),
      ),
    );
    for (const s of streams) {
      expect(s.finish).toMatch(/^(stop|length)$/);
      expect(s.tokens).toBeGreaterThan(0);
    }
    const text = await metricsText();
    // The replica's one context has 8 sequences; the streams held several of them at the same time.
    expect(metricValue(text, "pomona_node_sequences", "story-a")).toBe(8);
    expect(metricValue(text, "pomona_node_max_concurrent_sequences", "story-a")).toBeGreaterThanOrEqual(4);
    expect(metricValue(text, "pomona_node_running_requests", "story-a")).toBe(0);
  });
});

describe("the node token and request validation", () => {
  it("refuses a missing or wrong token with 401 in OpenAI's shape", async () => {
    const url = `${agent.url}/replicas/${ns}/story-a/v1/models`;
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect(((await none.json()) as { error: { type: string } }).error.type).toBe("authentication_error");
    const wrong = await fetch(url, { headers: { authorization: "Bearer not-the-token" } });
    expect(wrong.status).toBe(401);
    const badClient = new OpenAI({ apiKey: "wrong", baseURL: `${agent.url}/replicas/${ns}/story-a/v1`, maxRetries: 0 });
    await expect(badClient.models.list()).rejects.toMatchObject({ status: 401 });
  });

  it.each([
    [{ n: 9 }, "n"],
    [{ temperature: 5 }, "temperature"],
    [{ top_p: 0 }, "top_p"],
    [{ max_tokens: 0 }, "max_tokens"],
    [{ top_logprobs: 3 }, "top_logprobs"],
    [{ logit_bias: { "100000": 1 } }, "logit_bias"],
    [
      { tools: [{ type: "function", function: { name: "f", parameters: { type: "string", pattern: "^a" } } }] },
      "tools[0].function.parameters",
    ],
  ])("refuses %j with 400 naming the param", async (extra, param) => {
    const response = await fetch(`${agent.url}/replicas/${ns}/story-a/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${NODE_AGENT_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "stories", messages: [{ role: "user", content: "hi" }], ...extra }),
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: { type: string; param: string; message: string } };
    expect(body.error.type).toBe("invalid_request_error");
    expect(body.error.param).toBe(param);
    expect(body.error.message.length).toBeGreaterThan(10);
  });

  it("answers 404 for a replica this node does not hold", async () => {
    const response = await fetch(`${agent.url}/replicas/${ns}/nobody/v1/models`, {
      headers: { authorization: `Bearer ${NODE_AGENT_TOKEN}` },
    });
    expect(response.status).toBe(404);
  });
});

describe("a client that leaves mid-stream", () => {
  it("aborts the generation and a queued request, and frees the replica's only sequence for the next", async () => {
    // One sequence with a long context: a stream runs for seconds, so the abort lands mid-generation.
    await createReplica("story-single", { path: tinyModel }, { contextSize: 2048, parallelSequences: 1 });
    await waitForPhase("story-single", "Ready");
    const c = client("story-single");
    const long = (signal: AbortSignal) =>
      c.completions.create(
        { model: "stories", prompt: "Once upon a time", max_tokens: 2000, stream: true },
        { signal },
      );
    const metric = async (name: string, extra = "") => metricValue(await metricsText(), name, "story-single", extra);

    // While one stream holds the only sequence, a second caller queues, then gives up while still waiting.
    const holder = new AbortController();
    await long(holder.signal);
    const giveUp = new AbortController();
    const queued = c.completions
      .create({ model: "stories", prompt: "Once", max_tokens: 5 }, { signal: giveUp.signal })
      .catch((e: unknown) => e);
    await eventually("a queued request", async () =>
      (await metric("pomona_node_queue_depth")) === 1 ? true : undefined,
    );
    giveUp.abort();
    expect(await queued).toBeInstanceOf(Error);
    await eventually("an empty queue", async () =>
      (await metric("pomona_node_queue_depth")) === 0 ? true : undefined,
    );
    holder.abort();
    // Both earlier requests are counted (the holder as aborted, or ok had it already finished).
    await eventually("both earlier requests counted", async () => {
      const done = (await metric("pomona_node_requests_total", 'outcome="aborted"')) || 0;
      const ok = (await metric("pomona_node_requests_total", 'outcome="ok"')) || 0;
      return done + ok === 2 && (await metric("pomona_node_running_requests")) === 0 ? true : undefined;
    });

    // A stream whose reader leaves after a few chunks stops generating long before its 2000 tokens.
    const abortedBefore = await metric("pomona_node_requests_total", 'outcome="aborted"');
    const tokensBefore = await metric("pomona_node_generated_tokens_total");
    const controller = new AbortController();
    let chunks = 0;
    // The openai client ends the iteration quietly when its own signal aborts it.
    for await (const _ of await long(controller.signal)) {
      if (++chunks === 5) controller.abort();
    }
    await eventually("the aborted request counted", async () => {
      const aborted = await metric("pomona_node_requests_total", 'outcome="aborted"');
      return aborted === abortedBefore + 1 && (await metric("pomona_node_running_requests")) === 0 ? true : undefined;
    });
    expect((await metric("pomona_node_generated_tokens_total")) - tokensBefore).toBeLessThan(1500);
    const next = await c.completions.create({ model: "stories", prompt: "Once", max_tokens: 5 });
    expect(next.usage?.completion_tokens).toBe(5);
  });
});

describe("a cancel by id, as the gateway sends it", () => {
  it("stops the generation, ends the answer and keeps both connections for the next calls", async () => {
    await waitForPhase("story-single", "Ready");
    const metric = async (name: string, extra = "") => metricValue(await metricsText(), name, "story-single", extra);
    const pool = new HttpAgent({ keepAlive: true });
    const sockets = new Set<unknown>();
    const call = (method: string, path: string, headers: Record<string, string>, body?: string) =>
      new Promise<IncomingMessage>((resolve, reject) => {
        const req = httpRequest(`${agent.url}${path}`, {
          method,
          agent: pool,
          headers: {
            authorization: `Bearer ${NODE_AGENT_TOKEN}`,
            ...(body === undefined ? {} : { "content-type": "application/json" }),
            ...headers,
          },
        });
        req.once("socket", (socket) => sockets.add(socket));
        req.once("response", resolve);
        req.once("error", reject);
        req.end(body);
      });
    const readAll = (res: IncomingMessage) =>
      new Promise<string>((resolve, reject) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.once("end", () => resolve(text));
        res.once("error", reject);
      });
    const path = `/replicas/${ns}/story-single/v1/completions`;
    const long = (cancelId: string) =>
      call(
        "POST",
        path,
        { [nodeCancel.header]: cancelId },
        JSON.stringify({ model: "stories", prompt: "Once upon a time", max_tokens: 2000, stream: true }),
      );

    for (let round = 0; round < 2; round++) {
      const abortedBefore = await metric("pomona_node_requests_total", 'outcome="aborted"');
      const cancelId = randomUUID();
      const stream = await long(cancelId);
      expect(stream.statusCode).toBe(200);
      const text = readAll(stream);
      // Wait for generated text, so the cancel lands mid-generation.
      await new Promise<void>((resolve) =>
        stream.on("data", (chunk: string) => (chunk.includes('"text"') ? resolve() : undefined)),
      );
      const cancel = await call("DELETE", nodeCancel.path(cancelId), {});
      expect(cancel.statusCode).toBe(204);
      await readAll(cancel);
      // The answer ends cleanly (no [DONE]: nobody reads it) instead of being cut off with its connection.
      expect(await text).not.toContain("[DONE]");
      await eventually("the cancelled request counted", async () => {
        const aborted = await metric("pomona_node_requests_total", 'outcome="aborted"');
        return aborted === abortedBefore + 1 && (await metric("pomona_node_running_requests")) === 0 ? true : undefined;
      });
      // An id no running request has: nothing to cancel.
      const again = await call("DELETE", nodeCancel.path(cancelId), {});
      expect(again.statusCode).toBe(404);
      await readAll(again);
    }
    // Every call above went over the two connections the first round opened.
    expect(sockets.size).toBe(2);
    const next = await call("POST", path, {}, JSON.stringify({ model: "stories", prompt: "Once", max_tokens: 5 }));
    expect(JSON.parse(await readAll(next)).usage.completion_tokens).toBe(5);
    expect(sockets.size).toBe(2);
    pool.destroy();
  });

  it("is refused without the node token", async () => {
    const res = await fetch(`${agent.url}${nodeCancel.path(randomUUID())}`, { method: "DELETE" });
    expect(res.status).toBe(401);
  });
});

describe("a replica downloaded over https", () => {
  it("downloads into the cache, checks its sha256, goes Ready and is announced on the Node", async () => {
    await createReplica("story-https", {
      url: `${host.url}/models/stories260K.gguf`,
      sha256: tinyModelSha256,
    });
    const r = await waitForPhase("story-https", "Ready");
    expect(phasesSeen.get("story-https")).toEqual(["Pending", "Downloading", "Loading", "Ready"]);
    expect(r.status?.progress?.bytesDone).toBe(r.status?.progress?.bytesTotal);
    await eventually("the cached-models annotation", async () => {
      const node = await kc.makeApiClient(CoreV1Api).readNode({ name: nodeName });
      return node.metadata?.annotations?.[annotations.cachedModels]?.includes(tinyModelSha256) ? true : undefined;
    });
    const answer = await client("story-https").completions.create({ model: "stories", prompt: "Once", max_tokens: 4 });
    expect(answer.usage?.completion_tokens).toBe(4);
  });
});

describe("replicas that cannot load", () => {
  it.each([
    { name: "bad-missing", source: () => ({ path: "/nonexistent/model.gguf" }), reason: "FileNotFound" },
    { name: "bad-checksum", source: () => ({ path: tinyModel, sha256: "0".repeat(64) }), reason: "ChecksumMismatch" },
    {
      name: "bad-corrupt",
      source: () => {
        const path = join(agent.cacheDir, "..", `corrupt-${Date.now()}.gguf`);
        writeFileSync(path, Buffer.from("GGUF this is not a model file at all".repeat(100)));
        return { path };
      },
      reason: "CorruptFile",
    },
  ])("$name fails with reason $reason while story-a keeps serving", async ({ name, source, reason }) => {
    await createReplica(name, source());
    const r = await waitForPhase(name, "Failed");
    expect(r.status?.reason).toBe(reason);
    expect(r.status?.message?.length).toBeGreaterThan(10);
    expect(r.status?.endpoint).toBeUndefined();
    const answer = await client("story-a").completions.create({ model: "stories", prompt: "Once", max_tokens: 3 });
    expect(answer.usage?.completion_tokens).toBe(3);
  });

  it("refuses a replica whose memory does not fit the node", async () => {
    // A million tokens of context need more KV cache than the node's 1Gi of model memory.
    await createReplica("too-big", { path: tinyModel }, { contextSize: 1048576, parallelSequences: 1 });
    const r = await waitForPhase("too-big", "Failed");
    expect(r.status?.reason).toBe("InsufficientMemory");
  });
});

describe("deleting a replica", () => {
  it("unloads it: its endpoint goes away and its metrics with it", async () => {
    await kubectlOk(["delete", "modelreplica", "story-single", "-n", ns, "--wait=true"]);
    await eventually("story-single unloaded", async () => {
      const response = await fetch(`${agent.url}/replicas/${ns}/story-single/v1/models`, {
        headers: { authorization: `Bearer ${NODE_AGENT_TOKEN}` },
      });
      return response.status === 404 ? true : undefined;
    });
    expect(Number.isNaN(metricValue(await metricsText(), "pomona_node_sequences", "story-single"))).toBe(true);
  });
});

describe("graceful drain", () => {
  it("on SIGTERM finishes a running stream, refuses new work, marks replicas Terminating and exits", async () => {
    const stream = await client("story-a").completions.create({
      model: "stories",
      prompt: "Once upon a time",
      max_tokens: 200,
      stream: true,
      stream_options: { include_usage: true },
    });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    agent.process.child.kill("SIGTERM");
    const refused = await eventually("new work refused", async () => {
      const response = await fetch(`${agent.url}/replicas/${ns}/story-a/v1/models`, {
        headers: { authorization: `Bearer ${NODE_AGENT_TOKEN}` },
      }).catch(() => undefined);
      return response?.status === 503 ? response : undefined;
    });
    // Unavailable, not failed: the gateway tries another replica when a 503 carries Retry-After.
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("node_draining");
    let usage: OpenAI.CompletionUsage | undefined;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) usage = next.value.usage ?? usage;
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    const child = agent.process.child;
    const exited =
      child.exitCode ?? (await new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code))));
    expect(exited).toBe(0);
    expect((await readReplica("story-a")).status?.phase).toBe("Terminating");
  });
});
