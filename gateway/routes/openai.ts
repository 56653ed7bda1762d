/**
 * The OpenAI-compatible API under /v1. Every route authenticates in onRequest,
 * before the body is read, so an anonymous caller cannot make the gateway
 * parse a large body.
 */
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { chatCompletionRequest, completionRequest, embeddingRequest } from "../../crds/api/openai-requests.ts";
import type { ConfigHolder } from "../config-source/config-holder.ts";
import { keyMayUse } from "../config-source/route-table.ts";
import { ModelNotAllowedError, ModelNotFoundError } from "../errors.ts";
import type { HashingKeysHolder } from "../key-hashing.ts";
import { modelObject } from "../model-object.ts";
import { modelParams } from "../openai-schemas.ts";
import { type InferenceDeps, inferenceHandler } from "../serve-inference.ts";
import { authenticator } from "./authenticate.ts";
import type { InvalidKeyThrottle } from "./invalid-key-throttle.ts";

export interface OpenAiRouteOptions {
  holder: ConfigHolder;
  hashingKeys: HashingKeysHolder;
  throttle: InvalidKeyThrottle;
  inference: InferenceDeps;
}

export async function openAiRoutes(root: FastifyInstance, opts: OpenAiRouteOptions) {
  const app = root.withTypeProvider<ZodTypeProvider>();
  app.addHook(
    "onRequest",
    authenticator({
      holder: opts.holder,
      hashingKeys: opts.hashingKeys,
      throttle: opts.throttle,
      metrics: opts.inference.metrics,
      now: opts.inference.now,
    }),
  );

  app.get("/models", async (request) => {
    const table = request.routeTable!;
    const caller = request.caller!;
    const created = Date.parse(table.generatedAt);
    return {
      object: "list",
      data: table
        .modelsOf(caller.key.namespace)
        .filter((m) => keyMayUse(table, caller, m))
        .map((m) => modelObject(m, created)),
    };
  });

  app.get("/models/:model", { schema: { params: modelParams } }, async (request) => {
    const table = request.routeTable!;
    const caller = request.caller!;
    const model = table.resolveModel(caller.key.namespace, request.params.model);
    if (!model) throw new ModelNotFoundError(request.params.model);
    if (!keyMayUse(table, caller, model)) throw new ModelNotAllowedError(request.params.model);
    return modelObject(model, Date.parse(table.generatedAt));
  });

  app.post("/chat/completions", { schema: { body: chatCompletionRequest } }, inferenceHandler(opts.inference, "chat"));
  app.post("/completions", { schema: { body: completionRequest } }, inferenceHandler(opts.inference, "completion"));
  app.post("/embeddings", { schema: { body: embeddingRequest } }, inferenceHandler(opts.inference, "embedding"));
}
