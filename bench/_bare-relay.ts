// The floor of a two-process HTTP path, for bench/npm-start-stack.ts: a bare Node HTTP server that sends each
// request on to an upstream (bench/_overhead-upstream.ts) over a kept-alive undici pool and passes the answer
// back as it comes — the hops `npm start`'s gateway and node-agent make, with none of their work (no
// routing, keys, limits, validation, TLS or inference).
//
//   node bench/_bare-relay.ts <upstream port>
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Pool } from "undici";

const upstream = new Pool(`http://127.0.0.1:${Number(process.argv[2])}`, { connections: 16 });
const server = createServer((req, res) => {
  const body: Buffer[] = [];
  req.on("data", (c: Buffer) => body.push(c));
  req.on("end", async () => {
    try {
      const answer = await upstream.request({
        path: req.url ?? "/",
        method: "POST",
        headers: { "content-type": "application/json" },
        body: Buffer.concat(body),
      });
      res.writeHead(answer.statusCode, { "content-type": String(answer.headers["content-type"]) });
      for await (const chunk of answer.body) res.write(chunk);
      res.end();
    } catch {
      res.destroy();
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => process.send?.({ port: (server.address() as AddressInfo).port }));
process.once("disconnect", () => process.exit(0));
