/**
 * The gateway's internal listener: /healthz, /readyz and /metrics for the kubelet and Prometheus. It is a
 * separate server on its own port (POMONA_GATEWAY_ADMIN_PORT) that the client-facing Service and Ingress
 * do not expose, so metrics (models, owners, replica and node names) never reach clients.
 */
import Fastify, { type FastifyInstance, LogController } from "fastify";
import type { ConfigHolder } from "./config-source/config-holder.ts";
import { errorHandler } from "./error-handler.ts";
import { RouteNotFoundError } from "./errors.ts";
import type { HashingKeysHolder } from "./key-hashing.ts";
import type { GatewayMetrics } from "./metrics.ts";
import { healthRoutes } from "./routes/health.ts";

export async function buildAdminApp(deps: {
  holder: ConfigHolder;
  hashingKeys: HashingKeysHolder;
  metrics: GatewayMetrics;
  logLevel?: string;
}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: { level: deps.logLevel ?? "info" },
    // Scrapes and probes every few seconds would drown the access log.
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.setErrorHandler(errorHandler(1024));
  app.setNotFoundHandler((request) => {
    throw new RouteNotFoundError(request.method);
  });
  await app.register(healthRoutes, { holder: deps.holder, hashingKeys: deps.hashingKeys, metrics: deps.metrics });
  return app;
}
