/**
 * The routes that speak another wire format than OpenAI's chat completions: `/v1/responses` (OpenAI's
 * Responses API) and `/v1/messages` (Anthropic's Messages API). Each is its own plugin so its errors,
 * authentication failures included, are answered in its own envelope; both are served by the same
 * pipeline as /v1/chat/completions (gateway/serve-inference.ts).
 */
import type { FastifyInstance } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import type { z } from "zod";
import { anthropicMessagesRequest } from "../../crds/api/anthropic-requests.ts";
import { responsesRequest } from "../../crds/api/responses-requests.ts";
import { errorHandler } from "../error-handler.ts";
import { type InferenceDeps, inferenceHandler } from "../serve-inference.ts";
import { messagesWire } from "../wire/anthropic-messages.ts";
import { responsesWire } from "../wire/responses.ts";
import type { WireFormat } from "../wire/wire-format.ts";
import { type AuthenticatorDeps, authenticator } from "./authenticate.ts";

export interface WireRouteOptions {
  auth: Omit<AuthenticatorDeps, "apiKeyHeader">;
  inference: InferenceDeps;
  bodyLimitBytes: number;
}

function wireRoute(path: string, schema: z.ZodType, wire: WireFormat, apiKeyHeader: boolean) {
  return async function routes(root: FastifyInstance, opts: WireRouteOptions) {
    const app = root.withTypeProvider<ZodTypeProvider>();
    app.setErrorHandler(errorHandler(opts.bodyLimitBytes, wire.envelope));
    app.addHook("onRequest", authenticator({ ...opts.auth, apiKeyHeader }));
    app.post(path, { schema: { body: schema } }, inferenceHandler(opts.inference, "chat", wire));
  };
}

export const responsesRoutes = wireRoute("/responses", responsesRequest, responsesWire, false);
export const messagesRoutes = wireRoute("/messages", anthropicMessagesRequest, messagesWire, true);
