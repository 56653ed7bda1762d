/** Liveness, readiness (a valid config is in use) and Prometheus metrics. */
import type { FastifyInstance } from "fastify";
import type { ConfigHolder } from "../config-source/config-holder.ts";
import { NotReadyError } from "../errors.ts";
import type { HashingKeysHolder } from "../key-hashing.ts";
import type { GatewayMetrics } from "../metrics.ts";

export async function healthRoutes(
  app: FastifyInstance,
  opts: { holder: ConfigHolder; hashingKeys: HashingKeysHolder; metrics: GatewayMetrics },
) {
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async () => {
    // Without the hashing keys no API key can be checked: not ready either.
    if (!opts.holder.current || !opts.hashingKeys.current) throw new NotReadyError();
    return { status: "ready", configVersion: opts.holder.version };
  });
  app.get("/metrics", async (_request, reply) => {
    reply.type(opts.metrics.registry.contentType);
    return opts.metrics.registry.metrics();
  });
}
