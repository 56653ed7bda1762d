// Real inference through the gateway: the real node-agent (node-agent/main.ts, virtual mode) loads the
// tiny stories model from a ModelReplica in the real API server, and the official openai client talks
// to the gateway in front of it.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeKey } from "./support/gateway.ts";
import { type InferenceStack, startInferenceStack } from "./support/inference-stack.ts";
import { eventually } from "./support/processes.ts";

const ns = "gw-agent";
const key = makeKey(ns, "k");
let stack: InferenceStack;

const client = () => new OpenAI({ apiKey: key.secret, baseURL: `${stack.gateway.url}/v1`, maxRetries: 0 });

async function agentMetric(pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${stack.agent.url}/metrics`)).text();
  return [...text.matchAll(pattern)].reduce((n, m) => n + Number(m[1]), 0);
}
/** A long stream through the gateway that the client leaves after its third chunk. */
async function leaveMidStream(): Promise<void> {
  const controller = new AbortController();
  const stream = await client().chat.completions.create(
    {
      model: "stories",
      messages: [{ role: "user", content: "Tell a very long story" }],
      max_tokens: 250,
      stream: true,
    },
    { signal: controller.signal },
  );
  let chunks = 0;
  try {
    for await (const _chunk of stream) if (++chunks === 3) controller.abort();
  } catch {
    // The client's own abort.
  }
}
const agentTokens = () => agentMetric(/^pomona_node_generated_tokens_total\{[^}]*\}\s+(\d+)/gm);
const agentAborted = () => agentMetric(/^pomona_node_requests_total\{[^}]*outcome="aborted"[^}]*\}\s+(\d+)/gm);

beforeAll(async () => {
  stack = await startInferenceStack(ns, { keys: [key], embeddings: true, sequenceContextSize: 256 });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
});

describe("real inference through the gateway", () => {
  it("answers a chat completion with real usage", async () => {
    const { data, response } = await client()
      .chat.completions.create({
        model: "tiny-stories",
        messages: [{ role: "user", content: "Once upon a time" }],
        max_tokens: 16,
      })
      .withResponse();
    expect(data.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(data.model).toBe("stories");
    expect(response.headers.get("x-pomona-model")).toBe("stories");
    expect(data.usage?.completion_tokens).toBeGreaterThan(0);
    expect(data.usage?.completion_tokens).toBeLessThanOrEqual(16);
  });

  it("streams tokens, with usage only when asked", async () => {
    for (const includeUsage of [false, true]) {
      const stream = await client().chat.completions.create({
        model: "stories",
        messages: [{ role: "user", content: "Tell me about a cat" }],
        max_tokens: 16,
        stream: true,
        ...(includeUsage ? { stream_options: { include_usage: true } } : {}),
      });
      let text = "";
      let usage: OpenAI.CompletionUsage | undefined | null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? "";
        usage = chunk.usage ?? usage;
        expect(chunk.model).toBe("stories");
      }
      expect(text.length).toBeGreaterThan(0);
      if (includeUsage) expect(usage?.completion_tokens).toBeGreaterThan(0);
      else expect(usage ?? undefined).toBeUndefined();
    }
  });

  it("answers a text completion and an embedding", async () => {
    const completion = await client().completions.create({ model: "stories", prompt: "The dog", max_tokens: 8 });
    expect(completion.choices[0]?.text.length).toBeGreaterThan(0);
    const embedding = await client().embeddings.create({ model: "stories", input: "a little girl named Lily" });
    expect(embedding.data[0]?.embedding.length).toBeGreaterThan(0);
  });

  it("embeds as many inputs as the gateway accepts: both sides validate with one schema", async () => {
    // OpenAI's limit is 2,048 inputs; the node once refused more than 256 that the gateway had let through.
    const input = Array.from({ length: 300 }, (_, i) => `story number ${i}`);
    const embedding = await client().embeddings.create({ model: "stories", input });
    expect(embedding.data.map((d) => d.index)).toEqual(input.map((_, i) => i));
  });

  it("stops the node's generation when the client leaves mid-stream", async () => {
    await leaveMidStream();
    // The agent counts the request as aborted: the gateway cancelled it and the node stopped.
    await eventually(
      "the agent to count an aborted request",
      async () => ((await agentAborted()) >= 1 ? true : undefined),
      20_000,
    );
    const soon = await agentTokens();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await agentTokens()).toBe(soon);
  });

  it("cancels on the node without closing the gateway's connections to it", async () => {
    const connectionsOpened = () => agentMetric(/^pomona_node_connections_opened_total\s+(\d+)/gm);
    const abortedBefore = await agentAborted();
    const openedBefore = await connectionsOpened();
    const rounds = 3;
    for (let i = 0; i < rounds; i++) {
      await leaveMidStream();
      // A non-streamed answer the client gives up on while the node generates it: four choices of up to 250
      // tokens, one after another, so it runs long enough for the node's gauge to show it.
      const waiting = new AbortController();
      const answer = client()
        .chat.completions.create(
          { model: "stories", messages: [{ role: "user", content: "Tell a very long story" }], max_tokens: 250, n: 4 },
          { signal: waiting.signal },
        )
        .catch((err: unknown) => err);
      await eventually("the node to generate the non-streamed answer", async () =>
        (await agentMetric(/^pomona_node_running_requests\{[^}]*\}\s+(\d+)/gm)) > 0 ? true : undefined,
      );
      waiting.abort();
      expect(await answer).toBeInstanceOf(Error);
      await eventually("the node to count both cancels", async () =>
        (await agentAborted()) >= abortedBefore + 2 * (i + 1) ? true : undefined,
      );
    }
    // Closing a connection per cancel would have opened one per cancel (six); the cancel's own call may need one
    // beside the answer's, and this test's metric reads share another.
    expect((await connectionsOpened()) - openedBefore).toBeLessThanOrEqual(2);
  });

  it("charges the node's real usage to the key's owner", async () => {
    expect(await stack.tokensCounted("team-k", "completion")).toBeGreaterThan(0);
  });
});
