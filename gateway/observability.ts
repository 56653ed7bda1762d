/**
 * Request ids, access logs and request metrics for every request, hijacked
 * streams included: both are written when the response closes. Logs carry the
 * key's name and owner, never the key or any header that might hold one.
 */
import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { GatewayMetrics } from "./metrics.ts";

export const observability = fp(async function observability(app: FastifyInstance, opts: { metrics: GatewayMetrics }) {
  const { metrics } = opts;
  // The access line is built below from fields none of which is, or holds, a header or a key (the key's
  // name, not the key), so the redaction paths can never match it; and pino's redaction is not free: with
  // its wildcard paths it clones and re-parses every property of every line, ~11 KB of garbage per request
  // (docs/decisions.md, "Tail latency under load"). So this one line is written by a child logger without
  // redaction; every other log line keeps it.
  const accessLog = app.log.child({}, { redact: [] });
  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
    const started = performance.now();
    reply.raw.once("close", () => {
      const route = request.routeOptions.url ?? "unmatched";
      const status = reply.raw.headersSent ? reply.raw.statusCode : 499;
      const seconds = (performance.now() - started) / 1000;
      const model = request.answeredModel ?? request.requestedModel ?? "";
      const owner = request.caller?.key.owner ?? "";
      metrics.requests.inc({ route, model, owner, status: String(status) });
      if (model !== "") metrics.duration.observe({ route, model }, seconds);
      accessLog.info(
        {
          // request.log carries it as a binding; this shared logger has none, so it is written here.
          requestId: request.id,
          method: request.method,
          // The client's address as the gateway believes it (a trusted proxy's X-Forwarded-For, else the socket).
          client: request.ip,
          route,
          status,
          ms: Math.round(seconds * 10_000) / 10,
          model: request.requestedModel ?? undefined,
          answeredBy: request.answeredModel ?? undefined,
          owner: owner || undefined,
          key: request.caller ? `${request.caller.key.namespace}/${request.caller.key.name}` : undefined,
        },
        "request",
      );
    });
  });
});

/** pino options: authorization headers and anything named like a key or token are never written. */
export const redactPaths = [
  "req.headers.authorization",
  "req.headers['x-api-key']",
  "headers.authorization",
  "authorization",
  "*.authorization",
  "apiKey",
  "*.apiKey",
  "token",
  "*.token",
];
