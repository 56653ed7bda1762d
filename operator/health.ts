/**
 * /healthz (the process runs), /readyz (its caches have synced: a standby is ready once it could take
 * over and work at once, so a rolling update waits for the new replica's caches before the old leader
 * goes) and /metrics.
 */
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";

export function serveHealth(port: number, registry: Registry, ready: () => boolean): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === "/healthz") res.writeHead(200).end("ok");
    else if (req.url === "/readyz") {
      const ok = ready();
      res.writeHead(ok ? 200 : 503).end(ok ? "ok" : "caches not synced");
    } else if (req.url === "/metrics") {
      registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
    } else res.writeHead(404).end();
  });
  return new Promise((resolve) => server.listen(port, () => resolve(server)));
}
