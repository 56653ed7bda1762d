/**
 * The gateway's public app, assembled: read top to bottom, this is its table of contents.
 * buildApp never listens; main.ts does, and tests may use inject() or a port. Health and
 * metrics live on the internal listener (admin-app.ts), not here.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions, LogController } from "fastify";
import { serializerCompiler, validatorCompiler } from "fastify-type-provider-zod";
import pino from "pino";
import { requestIdOf } from "../crds/api/well-known.ts";
import { defaultAnswerLimitBytes } from "./answer-limit.ts";
import {
  answerClientError,
  type ClientLimits,
  createPublicServer,
  defaultClientLimits,
  proxyList,
} from "./client-connections.ts";
import type { QueueSettings } from "./config.ts";
import type { ConfigHolder } from "./config-source/config-holder.ts";
import { installInferenceCors } from "./cors.ts";
import { errorHandler } from "./error-handler.ts";
import { GatewayClosingError, RouteNotFoundError } from "./errors.ts";
import type { HashingKeysHolder } from "./key-hashing.ts";
import type { Limiter } from "./limits/limiter.ts";
import type { GatewayMetrics } from "./metrics.ts";
import { observability, redactPaths } from "./observability.ts";
import { requestDecorations } from "./request-context.ts";
import { InvalidKeyThrottle } from "./routes/invalid-key-throttle.ts";
import { openAiRoutes } from "./routes/openai.ts";
import { messagesRoutes, responsesRoutes } from "./routes/wire-routes.ts";
import { EndpointLoad } from "./routing/endpoint-picker.ts";
import { EndpointBreakers } from "./upstream/breakers.ts";
import { Dispatcher } from "./upstream/dispatch.ts";
import { NodeClient } from "./upstream/node-client.ts";
import { type NodeTransport, plainTransport } from "./upstream/node-transport.ts";

export interface GatewayDeps {
  holder: ConfigHolder;
  limiter: Limiter;
  metrics: GatewayMetrics;
  nodeToken: string;
  /** How nodes are reached; plain HTTP unless given (gateway/main.ts gives mutual TLS by default). */
  nodeTransport?: NodeTransport;
  upstream: { firstByteTimeoutMs: number; totalTimeoutMs: number; breakerResetMs: number };
  queue: QueueSettings;
  bodyLimitBytes: number;
  /** The keys API keys are hashed with (gateway/key-hashing.ts); requests wait as "not ready" until there are some. */
  hashingKeys: HashingKeysHolder;
  /** How many invalid keys an address may send before it is slowed (gateway/routes/invalid-key-throttle.ts). */
  invalidKeys?: { burst: number; refillPerMinute: number; maxAddresses: number };
  /** Largest non-streamed answer read from a node; defaults to answer-limit.ts. */
  answerLimitBytes?: number;
  /** Origins whose pages may call the /v1 routes from a browser (gateway/cors.ts); unset or empty: none. */
  corsOrigins?: readonly string[];
  /** Timeouts, the per-address connection cap and the trusted proxies of the public port. */
  clients?: ClientLimits;
  /** The clock of the limits; tests move it instead of sleeping through windows. */
  now?: () => number;
  logLevel?: string;
}

export const defaultInvalidKeys = { burst: 20, refillPerMinute: 20, maxAddresses: 10_000 };

export async function buildApp(deps: GatewayDeps): Promise<FastifyInstance> {
  // Log lines are written in batches (at least every 200 ms) instead of one write per line: with an access
  // line per request, a synchronous write each was a tenth of the gateway's CPU on the hot path. pino
  // flushes what is left when the process exits, and onClose below when the app closes.
  const logStream = pino.destination({ dest: 1, sync: false, minLength: 4096, periodicFlush: 200 });
  const clients = deps.clients ?? defaultClientLimits;
  const trustedProxy = proxyList(clients.trustedProxies);
  const options: FastifyServerOptions = {
    serverFactory: (handler) => createPublicServer(handler, clients, () => deps.metrics.connectionsRefused.inc()),
    // request.ip is the client's address: X-Forwarded-For is believed only from a trusted proxy.
    trustProxy: (address: string) => trustedProxy(address),
    clientErrorHandler: answerClientError,
    logger: { level: deps.logLevel ?? "info", redact: { paths: redactPaths, censor: "[redacted]" }, stream: logStream },
    bodyLimit: deps.bodyLimitBytes,
    // Access logs are written by observability.ts when the response closes, hijacked streams included.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: "requestId" }),
    genReqId: requestIdOf,
    // Fastify's own answer while closing is a 503 with no Retry-After and not in OpenAI's envelope.
    return503OnClosing: false,
  };
  const app = Fastify(options);
  // The API speaks JSON only; other bodies get a clear 415 instead of a confusing validation error.
  app.removeContentTypeParser("text/plain");
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  for (const name of requestDecorations) app.decorateRequest(name, null);
  app.setErrorHandler(errorHandler(deps.bodyLimitBytes));
  app.setNotFoundHandler((request) => {
    throw new RouteNotFoundError(request.method);
  });
  // A request that arrives on a kept-alive connection while the gateway closes is told to retry elsewhere.
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
  });
  app.addHook("onRequest", async () => {
    if (closing) throw new GatewayClosingError();
  });

  // Upstream: node calls, per-endpoint breakers and load, dispatch with retries, fallbacks and a waiting line.
  const client = new NodeClient({
    transport: deps.nodeTransport ?? plainTransport(),
    nodeToken: deps.nodeToken,
    firstByteTimeoutMs: deps.upstream.firstByteTimeoutMs,
  });
  const breakers = new EndpointBreakers({ resetMs: deps.upstream.breakerResetMs, metrics: deps.metrics });
  const dispatcher = new Dispatcher({
    client,
    breakers,
    load: new EndpointLoad(),
    metrics: deps.metrics,
    queue: deps.queue,
  });
  const follow = (models: Parameters<typeof breakers.retain>[0]) => {
    breakers.retain(models);
    dispatcher.retain(models);
  };
  if (deps.holder.current) follow(deps.holder.current.models);
  deps.holder.onChange((table) => follow(table.models));
  app.addHook("onClose", async () => {
    dispatcher.close();
    breakers.shutdown();
    client.close();
    logStream.flushSync();
  });

  await app.register(observability, { metrics: deps.metrics });
  installInferenceCors(app, deps.corsOrigins ?? []);
  const throttle = new InvalidKeyThrottle({ ...defaultInvalidKeys, ...deps.invalidKeys, now: deps.now ?? Date.now });
  const inference = {
    limiter: deps.limiter,
    dispatcher,
    metrics: deps.metrics,
    now: deps.now ?? Date.now,
    totalTimeoutMs: deps.upstream.totalTimeoutMs,
    answerLimitBytes: deps.answerLimitBytes ?? defaultAnswerLimitBytes,
  };
  await app.register(openAiRoutes, {
    prefix: "/v1",
    holder: deps.holder,
    hashingKeys: deps.hashingKeys,
    throttle,
    inference,
  });
  // The same pipeline in two more wire formats, each answering errors in its own envelope.
  const auth = {
    holder: deps.holder,
    hashingKeys: deps.hashingKeys,
    throttle,
    metrics: deps.metrics,
    now: deps.now ?? Date.now,
  };
  const wire = { prefix: "/v1", auth, inference, bodyLimitBytes: deps.bodyLimitBytes };
  await app.register(responsesRoutes, wire);
  await app.register(messagesRoutes, wire);
  return app;
}
