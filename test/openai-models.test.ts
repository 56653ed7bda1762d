// /v1/models and /v1/models/{id} seen through the official openai client: the plain OpenAI shape still
// parses, per key, and Pomona's metadata (context per request, capabilities, aliases) is readable under
// `pomona`. The models are compiled by the operator's own compiler from InferenceModels, so what the
// listing says comes from the engine settings; the upstream is the fake node (test/support/fake-node.ts).
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InferenceModel, ModelReplica } from "../crds/api/index.ts";
import { compileGatewayConfig } from "../operator/gateway-config/compile.ts";
import { FakeNode } from "./support/fake-node.ts";
import { ConfigFeed, createNamespace, makeKey, NODE_TOKEN, startGateway, type TestGateway } from "./support/gateway.ts";

const ns = "gw-models";
const node = new FakeNode({ name: "mac-models", token: NODE_TOKEN });
const full = makeKey(ns, "full");
const chatOnly = makeKey(ns, "chat-only", { models: ["writer"] });
let gateway: TestGateway;

interface PomonaModel extends OpenAI.Model {
  pomona: { context_length: number; capabilities: string[]; aliases: string[] };
}

const client = (apiKey: string) => new OpenAI({ apiKey, baseURL: `${gateway.url}/v1`, maxRetries: 0 });

const inferenceModel = (name: string, spec: Partial<InferenceModel["spec"]>): InferenceModel => ({
  apiVersion: "pomona.dev/v1alpha1",
  kind: "InferenceModel",
  metadata: { name, namespace: ns },
  spec: {
    source: { hf: "hf:a/b:Q4" },
    engine: { contextSize: 4096, parallelSequences: 4, embeddings: true },
    replicas: 1,
    placement: { strategy: "Spread" },
    rollout: { maxSurge: 1, maxUnavailable: 0 },
    ...spec,
  },
});

const readyReplica = (model: InferenceModel): ModelReplica => {
  const endpoint = node.endpoint(ns, `${model.metadata.name}-a`);
  return {
    apiVersion: "pomona.dev/v1alpha1",
    kind: "ModelReplica",
    metadata: { name: endpoint.replica, namespace: ns, labels: { "pomona.dev/model": model.metadata.name! } },
    spec: {
      model: model.metadata.name!,
      nodeName: "mac-models",
      source: model.spec.source,
      engine: model.spec.engine,
      memoryBytes: 1,
      templateHash: "x",
    },
    status: { phase: "Ready", endpoint: endpoint.url },
  };
};

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  gateway = await startGateway(ns);
  const models = [
    inferenceModel("assistant", { aliases: ["default"] }),
    inferenceModel("writer", { engine: { contextSize: 2048, parallelSequences: 8, embeddings: false } }),
  ];
  const compiled = compileGatewayConfig({
    models,
    replicas: models.map(readyReplica),
    keys: [],
    policies: [],
    now: new Date(),
  });
  const feed = new ConfigFeed(ns);
  await feed.publish({ models: compiled.models, keys: [full, chatOnly] });
  await gateway.waitForVersion(feed.version);
});

afterAll(async () => {
  await gateway?.close();
  await node.kill();
});

describe("the models a key may use, with Pomona's metadata", () => {
  it("lists them in OpenAI's shape, each with its per-request context and capabilities", async () => {
    const listed: PomonaModel[] = [];
    for await (const m of client(full.secret).models.list()) listed.push(m as PomonaModel);
    expect(listed.map((m) => m.id).sort()).toEqual(["assistant", "writer"]);
    for (const m of listed) {
      expect(m.object).toBe("model");
      expect(m.owned_by).toBe(ns);
      expect(Number.isInteger(m.created) && m.created > 1_700_000_000).toBe(true);
    }
    const assistant = listed.find((m) => m.id === "assistant")!;
    // 4096 tokens shared by 4 sequences: one request holds 1024, as the node-agent sizes each sequence.
    expect(assistant.pomona.context_length).toBe(1024);
    expect(assistant.pomona.capabilities).toEqual(expect.arrayContaining(["chat", "completions", "embeddings"]));
    expect(assistant.pomona.aliases).toEqual(["default"]);
    const writer = listed.find((m) => m.id === "writer")!;
    expect(writer.pomona.context_length).toBe(256);
    expect(writer.pomona.capabilities).toEqual(expect.arrayContaining(["chat", "completions"]));
    expect(writer.pomona.capabilities).not.toContain("embeddings");
  });

  it("lists only what the key may use, and retrieves a model by its alias", async () => {
    const some = await client(chatOnly.secret).models.list();
    expect(some.data.map((m) => m.id)).toEqual(["writer"]);
    const byAlias = (await client(full.secret).models.retrieve("default")) as PomonaModel;
    expect(byAlias.id).toBe("assistant");
    expect(byAlias.pomona.context_length).toBe(1024);
    await expect(client(chatOnly.secret).models.retrieve("assistant")).rejects.toBeInstanceOf(
      OpenAI.PermissionDeniedError,
    );
    await expect(client(full.secret).models.retrieve("nothing")).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    // Deleting is for fine-tuned models, which Pomona has none of: no such route.
    await expect(client(full.secret).models.delete("assistant")).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it("claims embeddings only where /v1/embeddings answers", async () => {
    const ok = await client(full.secret).embeddings.create({ model: "assistant", input: "a cat" });
    expect(ok.data).toHaveLength(1);
    const refused = await client(full.secret)
      .embeddings.create({ model: "writer", input: "a cat" })
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError);
  });

  it("claims tools and structured output exactly when the chat route accepts them", async () => {
    const { pomona } = (await client(full.secret).models.retrieve("assistant")) as PomonaModel;
    const asks: [string, string, Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>][] = [
      [
        "tools",
        "tools",
        { tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: {} } } }] },
      ],
      ["structured_output", "response_format", { response_format: { type: "json_object" } }],
    ];
    for (const [capability, param, extra] of asks) {
      const answer = await client(full.secret)
        .chat.completions.create({ model: "assistant", messages: [{ role: "user", content: "hi" }], ...extra })
        .catch((e: unknown) => e);
      const refused = answer instanceof OpenAI.BadRequestError && answer.param === param;
      expect(refused, `${capability} listed: ${pomona.capabilities.includes(capability)}`).toBe(
        !pomona.capabilities.includes(capability),
      );
    }
  });
});
