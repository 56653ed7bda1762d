/**
 * The model object of /v1/models and /v1/models/{id}: OpenAI's four fields, which every client parses, and
 * Pomona's own metadata under one `pomona` field, which clients that expect the plain shape ignore
 * (docs/decisions.md, "Model metadata under a `pomona` field of OpenAI's model object").
 */
import type { GatewayModel } from "../crds/api/index.ts";
import { chatCompletionRequest } from "../crds/api/openai-requests.ts";

export type ModelCapability = "chat" | "completions" | "embeddings" | "tools" | "structured_output";

/**
 * Tools and structured output are features of the chat route, served for every model once the request schema
 * accepts them: read from the schema the gateway validates with, so the listing cannot promise what a
 * request would be refused.
 */
const chatParams: ReadonlySet<string> = new Set(Object.keys(chatCompletionRequest.shape));
const chatFeatures: ModelCapability[] = [
  ...(chatParams.has("tools") ? (["tools"] as const) : []),
  ...(chatParams.has("response_format") ? (["structured_output"] as const) : []),
];

export function capabilitiesOf(model: GatewayModel): ModelCapability[] {
  return ["chat", "completions", ...(model.embeddings ? (["embeddings"] as const) : []), ...chatFeatures];
}

export function modelObject(model: GatewayModel, createdMs: number) {
  return {
    id: model.name,
    object: "model" as const,
    created: Math.floor(createdMs / 1000),
    owned_by: model.namespace,
    pomona: {
      /** Tokens one request may hold, prompt and completion together. */
      context_length: model.sequenceContextSize,
      capabilities: capabilitiesOf(model),
      aliases: model.aliases,
    },
  };
}
