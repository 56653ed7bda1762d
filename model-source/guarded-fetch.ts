/**
 * The one way Pomona fetches a model file from the network: the operator reads GGUF headers with it, the
 * node-agent downloads with it. Each hop, the first and every redirect, is checked against the allowed
 * hosts (allowed-hosts.ts); for a host allowed by name, every address it resolves to must be public, and
 * that check runs in the connection's own DNS lookup, so a name cannot resolve one way for the check and
 * another for the connection. Redirects are followed by hand, at most MAX_REDIRECTS. A connection idle
 * for longer than the idle timeout is cut, and a body longer than maxBytes ends in an error.
 */
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { isIP, type LookupFunction } from "node:net";
import { Transform } from "node:stream";
import { nonPublicKind } from "./address-policy.ts";
import { type AllowedHosts, judgeUrl } from "./allowed-hosts.ts";
import { showUrl } from "./show-url.ts";

export const MAX_REDIRECTS = 5;

export interface ModelSourcePolicy {
  allowed: AllowedHosts;
  /** No byte for this long (connecting, waiting for headers, or mid-body) ends the fetch. */
  idleTimeoutMs: number;
  /** Largest body accepted. */
  maxBytes: number;
}

/**
 * `SourceNotAllowed`: the URL or a redirect leads somewhere the policy refuses (a condition reason a user
 * can act on); `FileTooLarge`: over maxBytes; `DownloadFailed`: the network or the server failed.
 */
export type ModelSourceReason = "SourceNotAllowed" | "FileTooLarge" | "DownloadFailed";

export class ModelSourceError extends Error {
  readonly reason: ModelSourceReason;
  constructor(reason: ModelSourceReason, message: string) {
    super(message);
    this.name = "ModelSourceError";
    this.reason = reason;
  }
}

export interface ModelResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body, cut off with a FileTooLarge error past maxBytes; destroy it to stop early. */
  body: NodeJS.ReadableStream & { destroy(error?: Error): void };
  /** Where the answer finally came from (for messages, show it with showUrl). */
  url: URL;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

export async function fetchModelSource(
  url: string,
  policy: ModelSourcePolicy,
  options: { headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<ModelResponse> {
  let current: URL;
  try {
    current = new URL(url);
  } catch {
    throw new ModelSourceError("SourceNotAllowed", "the model URL is not a valid URL");
  }
  const asked = showUrl(current);
  for (let hop = 0; ; hop++) {
    const via = hop === 0 ? "" : ` (a redirect from ${asked})`;
    const verdict = judgeUrl(policy.allowed, current);
    // An address written into the URL itself is judged before the host list, for a plain message.
    const literal = current.hostname.replace(/^\[|\]$/g, "");
    const kind = verdict.allowed !== "origin" && isIP(literal) !== 0 ? nonPublicKind(literal) : undefined;
    if (kind)
      throw new ModelSourceError(
        "SourceNotAllowed",
        `${showUrl(current)}${via} is refused: ${literal} is a ${kind} address; model files come only from public addresses`,
      );
    if (verdict.allowed === false)
      throw new ModelSourceError("SourceNotAllowed", `${showUrl(current)}${via} is refused: ${verdict.reason}`);
    const publicOnly = verdict.allowed === "public-host";
    const response = await requestOnce(current, publicOnly, policy, options, via);
    const location = response.headers.location;
    if (!REDIRECTS.has(response.statusCode ?? 0) || !location) return limited(response, current, policy);
    response.destroy();
    if (hop >= MAX_REDIRECTS)
      throw new ModelSourceError("SourceNotAllowed", `${asked} redirected more than ${MAX_REDIRECTS} times`);
    try {
      current = new URL(location, current);
    } catch {
      throw new ModelSourceError("DownloadFailed", `${asked} redirected to an invalid URL`);
    }
  }
}

function requestOnce(
  url: URL,
  publicOnly: boolean,
  policy: ModelSourcePolicy,
  options: { headers?: Record<string, string>; signal?: AbortSignal },
  via: string,
): Promise<IncomingMessage> {
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, {
      method: "GET",
      headers: { accept: "*/*", ...options.headers },
      signal: options.signal,
      // A fresh connection each time: a pooled one would skip the address check of this hop.
      agent: false,
      ...(publicOnly ? { lookup: publicOnlyLookup } : {}),
    });
    req.setTimeout(policy.idleTimeoutMs, () =>
      req.destroy(
        new ModelSourceError(
          "DownloadFailed",
          `${showUrl(url)}${via} sent nothing for ${Math.round(policy.idleTimeoutMs / 1000)} s`,
        ),
      ),
    );
    req.once("response", resolve);
    req.once("error", (err) => {
      if (err instanceof AddressRefused)
        reject(new ModelSourceError("SourceNotAllowed", `${showUrl(url)}${via} is refused: ${err.message}`));
      else if (err instanceof ModelSourceError || options.signal?.aborted) reject(err);
      else reject(new ModelSourceError("DownloadFailed", `cannot fetch ${showUrl(url)}${via}: ${err.message}`));
    });
    req.end();
  });
}

/** A name that resolves to an address downloads may not reach; the request turns it into a ModelSourceError. */
class AddressRefused extends Error {}

/** dns.lookup, refusing a name with any non-public address (all of them are checked, IPv4 and IPv6). */
const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
    if (err) return callback(err, "", 4);
    const bad = addresses.find((a) => nonPublicKind(a.address));
    if (bad || addresses.length === 0) {
      const message = bad
        ? `${hostname} resolves to ${bad.address}, a ${nonPublicKind(bad.address)} address; model files come only from public addresses`
        : `${hostname} resolves to no address`;
      return callback(new AddressRefused(message) as NodeJS.ErrnoException, "", 4);
    }
    if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
    const first = addresses[0]!;
    callback(null, first.address, first.family);
  });
};

function limited(response: IncomingMessage, url: URL, policy: ModelSourcePolicy): ModelResponse {
  const declared = Number(response.headers["content-length"] ?? Number.NaN);
  if (Number.isFinite(declared) && declared > policy.maxBytes) {
    response.destroy();
    throw new ModelSourceError(
      "FileTooLarge",
      `${showUrl(url)} is ${declared} bytes, more than the limit of ${policy.maxBytes} bytes`,
    );
  }
  let seen = 0;
  const body = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > policy.maxBytes)
        callback(
          new ModelSourceError("FileTooLarge", `${showUrl(url)} sent more than the limit of ${policy.maxBytes} bytes`),
        );
      else callback(null, chunk);
    },
  });
  response.on("error", (err) => body.destroy(err));
  body.on("close", () => response.destroy());
  response.pipe(body);
  return { status: response.statusCode ?? 0, headers: response.headers, body, url };
}
