/**
 * One access line per request, written when the response closes (streams included), in place of Fastify's
 * two lines per request ("incoming request" before any work and "request completed"). The first was written
 * on the way to admission, so every request paid a log write before its first token; one line at the end,
 * as the gateway writes, keeps the log's content and takes the write off that path (docs/decisions.md,
 * "npm start's log lines go straight to their files").
 */
import type { FastifyInstance } from "fastify";

/** Registers the access line on every route of `app`. */
export function accessLog(app: FastifyInstance): void {
  app.addHook("onRequest", async (request, reply) => {
    const started = performance.now();
    reply.raw.once("close", () => {
      const params = request.params as { namespace?: string; name?: string } | undefined;
      // Every field is built here and none is, or holds, a header or the node token.
      app.log.info(
        {
          requestId: request.id,
          method: request.method,
          route: request.routeOptions.url ?? "unmatched",
          replica: params?.namespace && params.name ? `${params.namespace}/${params.name}` : undefined,
          // A response cut before its headers (the caller left) is written as 499, as the gateway does.
          status: reply.raw.headersSent ? reply.raw.statusCode : 499,
          ms: Math.round((performance.now() - started) * 10) / 10,
        },
        "request",
      );
    });
  });
}
