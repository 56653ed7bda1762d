/**
 * The node-agent's HTTP server, assembled in one place: open health and metrics routes, the node-token
 * check (and, with TLS, the gateway's client certificate) on everything else, the per-replica OpenAI routes, and one error shape.
 */
import { timingSafeEqual } from "node:crypto";
import type { TLSSocket } from "node:tls";
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from "fastify";
import { serializerCompiler, validatorCompiler } from "fastify-type-provider-zod";
import { type DestinationStream, pino } from "pino";
import { nodeCancel, nodeIdentity, requestIdOf } from "../crds/api/index.ts";
import { accessLog } from "./access-log.ts";
import { CancellableRequests } from "./cancellable-requests.ts";
import { defaultKeepAliveMs, defaultStallTimeoutMs } from "./config.ts";
import { AgentError, draining, toAgentError, unauthorized } from "./errors.ts";
import type { NodeAgentMetrics } from "./metrics.ts";
import type { ResponseTiming } from "./routes/admitted-response.ts";
import { inferenceRoutes, type ReplicaDirectory } from "./routes/inference.ts";
import type { ServingCredential } from "./serving-identity.ts";

export interface AppDeps {
  manager: ReplicaDirectory;
  metrics: NodeAgentMetrics;
  nodeToken: string;
  log: FastifyBaseLogger;
  /** True once the agent drains: new inference work gets 503 while running streams finish. */
  isDraining: () => boolean;
  /** True once the node is registered and the replica watch runs. */
  isReady: () => boolean;
  /** Keep-alive interval and stall timeout of admitted requests; the settings' defaults when unset. */
  timing?: ResponseTiming;

  /** Serve HTTPS with this certificate and require the gateway's client certificate on inference routes. */
  tls?: ServingCredential;
}

/** The TLS options of the node's server for a credential; also what a renewal swaps in. */
export const tlsOptions = (c: ServingCredential) => ({
  key: c.key,
  cert: c.cert,
  ca: c.ca,
  // Asked for, checked per request: health probes and metrics scrapes come without one.
  requestCert: true,
  rejectUnauthorized: false,
  minVersion: "TLSv1.3" as const,
});

/**
 * Connections already found to carry the gateway's certificate. A connection's peer certificate cannot change
 * (TLS 1.3 has no renegotiation) and the gateway reuses its connections, while reading the certificate costs
 * about 0.1 ms a request.
 */
const gatewayConnections = new WeakSet<TLSSocket>();

/** Whether the connection presented a client certificate of the gateway, signed by the node CA. */
function fromGateway(socket: TLSSocket): boolean {
  if (gatewayConnections.has(socket)) return true;
  const ok = socket.authorized && socket.getPeerCertificate().subject?.CN === nodeIdentity.gatewayCommonName;
  if (ok) gatewayConnections.add(socket);
  return ok;
}

const openPaths = new Set(["/healthz", "/readyz", "/metrics"]);

/**
 * The agent's one logger, to stdout unless `destination` is given; the node token and authorization headers
 * never reach a log line.
 */
export const createLogger = (level: string, destination?: DestinationStream): FastifyBaseLogger =>
  pino(
    {
      level,
      name: "node-agent",
      redact: { paths: ["req.headers.authorization", "token", "nodeToken"], censor: "[redacted]" },
    },
    destination,
  );

export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    ...(deps.tls ? { https: tlsOptions(deps.tls) } : {}),
    loggerInstance: deps.log,
    // One access line per request (access-log.ts) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: "requestId" }),
    genReqId: requestIdOf,
    bodyLimit: 4 * 1024 * 1024,
    // Streams end on the client's or the generation's schedule, never on a server timer.
    requestTimeout: 0,
    // While closing, Fastify's own 503 has no Retry-After, so the gateway would count it as a failure;
    // the agent is already draining by then and its hook answers node_draining with Retry-After instead.
    return503OnClosing: false,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  accessLog(app);
  app.server.on("connection", () => deps.metrics.connectionsOpened.inc());

  const expected = Buffer.from(`Bearer ${deps.nodeToken}`);
  app.addHook("onRequest", async (request) => {
    const path = request.url.split("?")[0] ?? "";
    if (openPaths.has(path)) return;
    const given = Buffer.from(request.headers.authorization ?? "");
    // Compare in constant time so the token cannot be guessed byte by byte from response timing.
    const ok = given.length === expected.length && timingSafeEqual(given, expected);
    if (!ok) throw unauthorized();
    if (deps.tls && !fromGateway(request.raw.socket as TLSSocket)) throw unauthorized();
    // A draining node finishes what runs, and a cancel is part of that.
    if (deps.isDraining() && request.routeOptions.url !== nodeCancel.route) throw draining();
  });

  app.setErrorHandler((err, request, reply) => {
    const known = toAgentError(err);
    if (known) {
      if (known.status >= 500) request.log.warn({ code: known.code }, known.message);
      if (known.retryAfterSeconds !== undefined) reply.header("retry-after", String(known.retryAfterSeconds));
      reply.code(known.status).send(known.envelope());
      return;
    }
    request.log.error({ err }, "unexpected error");
    reply
      .code(500)
      .send(new AgentError(500, "server_error", "internal_error", "The node failed the request.").envelope());
  });
  app.setNotFoundHandler((request, reply) => {
    reply
      .code(404)
      .send(
        new AgentError(404, "not_found_error", "not_found", `No route ${request.method} ${request.url}.`).envelope(),
      );
  });

  app.get("/healthz", async () => ({ ok: true }));
  app.get("/readyz", async (_request, reply) => {
    const ready = deps.isReady() && !deps.isDraining();
    reply.code(ready ? 200 : 503).send({ ready });
  });
  app.get("/metrics", async (_request, reply) => {
    reply.header("content-type", deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  app.register(inferenceRoutes, {
    manager: deps.manager,
    metrics: deps.metrics,
    timing: deps.timing ?? { keepAliveMs: defaultKeepAliveMs, stallMs: defaultStallTimeoutMs },
    cancellable: new CancellableRequests(),
  });
  return app;
}
