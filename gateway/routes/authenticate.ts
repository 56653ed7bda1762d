/**
 * Authenticates a bearer key before the body is even read: the key's
 * HMAC-SHA256 under the current hashing key (then, during a rotation, under
 * the previous one) is looked up in the config's key map. Keys left out of the
 * config (unknown or disabled) and expired keys are refused. An address that
 * keeps sending invalid keys is answered 429 for a while, before any lookup.
 * Routes of the Anthropic Messages API also take the key from `x-api-key`, Anthropic's header, when
 * there is no Authorization header.
 */
import type { FastifyRequest } from "fastify";
import { keyedHash } from "../../crds/api/index.ts";
import type { ConfigHolder } from "../config-source/config-holder.ts";
import {
  ExpiredApiKeyError,
  InvalidApiKeyError,
  MissingApiKeyError,
  NotReadyError,
  TooManyInvalidKeysError,
} from "../errors.ts";
import type { HashingKeysHolder } from "../key-hashing.ts";
import type { GatewayMetrics } from "../metrics.ts";
import type { InvalidKeyThrottle } from "./invalid-key-throttle.ts";

const BEARER = /^Bearer[ \t]+(\S{1,512})[ \t]*$/i;
const API_KEY = /^[ \t]*(\S{1,512})[ \t]*$/;

export interface AuthenticatorDeps {
  holder: ConfigHolder;
  hashingKeys: HashingKeysHolder;
  throttle: InvalidKeyThrottle;
  metrics: GatewayMetrics;
  now: () => number;
  /** Also accept the key in `x-api-key` (the Messages API's header). */
  apiKeyHeader?: boolean;
}

export function authenticator({ holder, hashingKeys, throttle, metrics, now, apiKeyHeader }: AuthenticatorDeps) {
  const invalid = (request: FastifyRequest): InvalidApiKeyError => {
    metrics.authFailures.inc({ reason: "invalid" });
    if (throttle.recordFailure(request.ip)) {
      metrics.authThrottledAddresses.inc();
      // The address goes to the log, not to a metric label: labels must stay few, and never a key.
      request.log.warn({ clientAddress: request.ip }, "address throttled after repeated invalid API keys");
    }
    return new InvalidApiKeyError();
  };

  return async function authenticate(request: FastifyRequest): Promise<void> {
    const table = holder.current;
    const hashing = hashingKeys.current;
    if (!table || !hashing) throw new NotReadyError();
    const waitMs = throttle.retryAfterMs(request.ip);
    if (waitMs > 0) {
      metrics.authThrottled.inc();
      throw new TooManyInvalidKeysError(waitMs);
    }
    const header = request.headers.authorization;
    const apiKey = apiKeyHeader ? request.headers["x-api-key"] : undefined;
    const hasBearer = header !== undefined && header !== "";
    if (!hasBearer && (apiKey === undefined || apiKey === "")) {
      metrics.authFailures.inc({ reason: "missing" });
      throw new MissingApiKeyError(
        apiKeyHeader
          ? "You didn't provide an API key. Send it as 'x-api-key: <key>' or 'Authorization: Bearer <key>'."
          : undefined,
      );
    }
    const match = hasBearer ? BEARER.exec(header) : typeof apiKey === "string" ? API_KEY.exec(apiKey) : null;
    if (!match) throw invalid(request);
    const key = match[1]!;
    // A Map lookup by digest is not a timing oracle worth guarding: the digest is keyed with a secret the client
    // does not hold, so learning how many leading bytes of a digest matched tells nothing about which key to try
    // next. No other comparison of key material happens here.
    let caller = table.keyByHash(keyedHash(key, hashing.current));
    if (!caller && hashing.previous) caller = table.keyByHash(keyedHash(key, hashing.previous));
    if (!caller) throw invalid(request);
    if (caller.expiresAtMs !== undefined && caller.expiresAtMs <= now()) {
      metrics.authFailures.inc({ reason: "expired" });
      throw new ExpiredApiKeyError();
    }
    request.routeTable = table;
    request.caller = caller;
  };
}
