/**
 * Stops the HTTP server: requests in flight may finish within the grace
 * period, then every connection still open is cut, including ones a client
 * opened and never used, which Node would otherwise keep until its headers
 * timeout (a minute).
 */
import type { FastifyInstance } from "fastify";

export async function closeGracefully(app: FastifyInstance, graceMs: number): Promise<void> {
  const timer = setTimeout(() => app.server.closeAllConnections(), graceMs);
  try {
    await app.close();
  } finally {
    clearTimeout(timer);
  }
}
