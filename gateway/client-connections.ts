/**
 * The public listener's defences against slow and greedy clients: short timeouts for a request's headers
 * and body (Node's defaults are a minute and five), and a cap on open connections per client address.
 * A connection over the cap gets a 429 with Retry-After and is closed before Node's HTTP parser sees it.
 * Connections from trusted proxies (an Ingress) are not capped: one proxy carries many clients, and the
 * cap for those belongs at the proxy. The same list decides whose X-Forwarded-For is believed.
 */
import { createServer, type RequestListener, type Server } from "node:http";
import { BlockList, isIP, type Socket } from "node:net";

export interface ClientLimits {
  /** Time a client has to send the request line and headers. */
  headersTimeoutMs: number;
  /** Time a client has to send the whole request, body included. */
  requestTimeoutMs: number;
  /** How long an idle keep-alive connection stays open between requests. */
  keepAliveTimeoutMs: number;
  /** Open connections one client address may hold; trusted proxies are exempt. */
  maxConnectionsPerClient: number;
  /** Addresses and CIDRs of proxies whose X-Forwarded-For is believed; empty trusts no one. */
  trustedProxies: string[];
}

export const defaultClientLimits: ClientLimits = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  maxConnectionsPerClient: 256,
  trustedProxies: [],
};

/** "10.0.0.0/8, 192.168.1.7, fd00::/8" → the entries; throws on anything that is not an address or CIDR. */
export function parseTrustedProxies(text: string): string[] {
  const entries = text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  for (const entry of entries) proxyList([entry]);
  return entries;
}

/** A matcher for addresses and CIDRs, IPv4-mapped IPv6 addresses included. */
export function proxyList(entries: readonly string[]): (address: string) => boolean {
  const list = new BlockList();
  for (const entry of entries) {
    const [address = "", prefix] = entry.split("/");
    const family = isIP(address);
    if (family === 0) throw new Error(`'${entry}' is not an IP address or CIDR`);
    const type = family === 4 ? "ipv4" : "ipv6";
    if (prefix === undefined) {
      list.addAddress(address, type);
      continue;
    }
    const bits = Number(prefix);
    if (!/^\d+$/.test(prefix) || bits > (family === 4 ? 32 : 128)) throw new Error(`'${entry}' has a bad prefix`);
    list.addSubnet(address, bits, type);
  }
  return (address) => {
    const plain = unmapped(address);
    const family = isIP(plain);
    return family !== 0 && list.check(plain, family === 4 ? "ipv4" : "ipv6");
  };
}

/** ::ffff:10.1.2.3 (an IPv4 client on a dual-stack socket) → 10.1.2.3. */
const unmapped = (address: string) =>
  address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;

/**
 * Fastify's clientErrorHandler: what a client whose request never became a request gets (too slow,
 * malformed, headers too large), in OpenAI's error shape like every other answer, then the socket closes.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === "ECONNRESET" || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, reason, code, message] =
    err.code === "ERR_HTTP_REQUEST_TIMEOUT"
      ? [408, "Request Timeout", "request_timeout", "The request was not received in time."]
      : err.code === "HPE_HEADER_OVERFLOW"
        ? [431, "Request Header Fields Too Large", "headers_too_large", "The request headers are too large."]
        : [400, "Bad Request", "malformed_request", "The request is not valid HTTP."];
  const body = JSON.stringify({ error: { message, type: "invalid_request_error", param: null, code } });
  socket.end(rawResponse(`${status} ${reason}`, body, {}));
}

const rawResponse = (statusLine: string, body: string, headers: Record<string, string>) =>
  [
    `HTTP/1.1 ${statusLine}`,
    "content-type: application/json; charset=utf-8",
    `content-length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    "connection: close",
    "",
    body,
  ].join("\r\n");

const TOO_MANY =
  '{"error":{"message":"Too many open connections from your address; close some and try again.","type":"rate_limit_error","param":null,"code":"too_many_connections"}}';
const TOO_MANY_RESPONSE = rawResponse("429 Too Many Requests", TOO_MANY, { "retry-after": "1" });

/**
 * The HTTP server of the public port, for Fastify's serverFactory. Node checks the header and request
 * timeouts on an interval (30 s by default), which would stretch a 10 s limit to 40 s: it runs often here.
 */
export function createPublicServer(
  handler: RequestListener,
  limits: ClientLimits,
  onRefused: () => void = () => {},
): Server {
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: Math.max(limits.requestTimeoutMs, limits.headersTimeoutMs),
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 4))),
    },
    handler,
  );
  const trusted = proxyList(limits.trustedProxies);
  const open = new Map<string, number>();
  // Node's HTTP machinery takes sockets through the 'connection' event; it gets only the ones under the cap.
  const httpConnection = server.listeners("connection") as ((socket: Socket) => void)[];
  server.removeAllListeners("connection");
  server.on("connection", (socket: Socket) => {
    const address = unmapped(socket.remoteAddress ?? "");
    if (address !== "" && !trusted(address)) {
      const count = (open.get(address) ?? 0) + 1;
      if (count > limits.maxConnectionsPerClient) {
        onRefused();
        socket.on("error", () => {});
        socket.end(TOO_MANY_RESPONSE);
        // A client that never reads must not keep even this socket.
        setTimeout(() => socket.destroy(), 1_000).unref();
        return;
      }
      open.set(address, count);
      socket.once("close", () => {
        const left = (open.get(address) ?? 1) - 1;
        if (left <= 0) open.delete(address);
        else open.set(address, left);
      });
    }
    for (const listener of httpConnection) listener.call(server, socket);
  });
  return server;
}
