/**
 * CORS for the inference routes (/v1/…), so a browser app on an allowed origin can call Pomona directly.
 * Off unless the gateway is given origins (POMONA_GATEWAY_CORS_ORIGINS). Only the public app installs it;
 * the admin app (metrics, probes) never answers cross-origin requests.
 *
 * A preflight from an allowed origin is answered 204 before authentication, since browsers send it without
 * the key. Every other /v1 answer from an allowed origin carries the origin, errors included (a 401 or a
 * 429 a page cannot read is a mystery to its user). The exact origin is echoed, never `*`, with
 * `Vary: Origin` so caches keep answers apart. Credentials (cookies) are never allowed: keys travel in a
 * header the page sets, which needs no credentials mode.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";

/** What the preflight allows: the inference routes are GET and POST. */
const ALLOWED_METHODS = "GET, POST, OPTIONS";
/**
 * Request headers a page may send: the key (Bearer or Anthropic's x-api-key), the body's type, the request id,
 * what the OpenAI and Anthropic SDKs add (x-stainless-*, their version and beta headers).
 */
const ALLOWED_HEADERS: ReadonlySet<string> = new Set([
  "authorization",
  "content-type",
  "accept",
  "x-api-key",
  "x-request-id",
  "anthropic-version",
  "anthropic-beta",
  "anthropic-dangerous-direct-browser-access",
  "openai-organization",
  "openai-project",
  "openai-beta",
  "idempotency-key",
]);
const ALLOWED_HEADER_PREFIX = "x-stainless-";
/** Answer headers a page may read besides the safelisted ones: what clients use to retry, trace and throttle. */
const EXPOSED_HEADERS = [
  "retry-after",
  "x-request-id",
  "x-pomona-model",
  "x-pomona-queue-ms",
  "x-ratelimit-limit-requests",
  "x-ratelimit-limit-tokens",
  "x-ratelimit-remaining-requests",
  "x-ratelimit-remaining-tokens",
  "x-ratelimit-reset-requests",
  "x-ratelimit-reset-tokens",
].join(", ");
/** Seconds a browser may reuse a preflight; Chromium caps it at 7200. */
export const PREFLIGHT_MAX_AGE_SECONDS = 7200;
/** Most request headers one preflight may name; a longer list is not a real client. */
const MAX_REQUESTED_HEADERS = 64;

const INFERENCE_PREFIX = "/v1/";

/**
 * Parse the setting: comma-separated origins (`https://app.example.com`, `http://localhost:5173`), or `*` for
 * any origin. Each must be a bare origin, scheme and host and optional port, nothing else; an entry that is
 * not throws, naming it.
 */
export function parseCorsOrigins(value: string): string[] {
  const out: string[] = [];
  for (const raw of value.split(",")) {
    const entry = raw.trim();
    if (entry === "") continue;
    if (entry === "*") {
      out.push(entry);
      continue;
    }
    const url = URL.parse(entry);
    // An origin is scheme, host and port: `new URL` adds a slash, so anything more (a path, a query, a user) shows.
    if (!url || !/^https?:$/.test(url.protocol) || url.href !== `${url.origin}/`)
      throw new Error(`'${entry}' is not an origin: scheme://host[:port], nothing more`);
    out.push(url.origin);
  }
  return out;
}

/** Install CORS on the public app for the given origins; with none, nothing is installed. */
export function installInferenceCors(app: FastifyInstance, origins: readonly string[]): void {
  if (origins.length === 0) return;
  const anyOrigin = origins.includes("*");
  const allowed: ReadonlySet<string> = new Set(origins);
  const mayCall = (origin: string) => origin !== "null" && (anyOrigin || allowed.has(origin));

  // A root hook: it runs before the /v1 routes' authentication, and for paths no route matches.
  app.addHook("onRequest", async (request: FastifyRequest, reply: FastifyReply) => {
    if (!request.url.startsWith(INFERENCE_PREFIX)) return;
    reply.header("vary", "Origin");
    const origin = request.headers.origin;
    if (origin === undefined || !mayCall(origin)) return;
    if (request.method === "OPTIONS" && request.headers["access-control-request-method"] !== undefined) {
      return reply
        .code(204)
        .headers({
          "access-control-allow-origin": origin,
          "access-control-allow-methods": ALLOWED_METHODS,
          "access-control-allow-headers": allowedRequestHeaders(request.headers["access-control-request-headers"]),
          "access-control-max-age": String(PREFLIGHT_MAX_AGE_SECONDS),
        })
        .send();
    }
    reply.header("access-control-allow-origin", origin).header("access-control-expose-headers", EXPOSED_HEADERS);
  });
}

/**
 * The requested headers Pomona allows, as the preflight answers them: naming each (rather than `*`) works for
 * every browser, and the SDKs' x-stainless-* headers change from release to release.
 */
function allowedRequestHeaders(requested: string | undefined): string {
  const names = (requested ?? "")
    .split(",", MAX_REQUESTED_HEADERS)
    .map((h) => h.trim().toLowerCase())
    .filter((h) => ALLOWED_HEADERS.has(h) || (h.startsWith(ALLOWED_HEADER_PREFIX) && /^[a-z0-9-]+$/.test(h)));
  return names.length > 0 ? names.join(", ") : [...ALLOWED_HEADERS].join(", ");
}
