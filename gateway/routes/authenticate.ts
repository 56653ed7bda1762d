/**
 * Authenticates a bearer key before the body is even read: the key's sha256
 * is looked up in the config's key map. Keys left out of the config (unknown
 * or disabled) and expired keys are refused.
 */
import { createHash } from "node:crypto";
import type { FastifyRequest } from "fastify";
import type { ConfigHolder } from "../config-source/config-holder.ts";
import { ExpiredApiKeyError, InvalidApiKeyError, MissingApiKeyError, NotReadyError } from "../errors.ts";

const BEARER = /^Bearer[ \t]+(\S{1,512})[ \t]*$/i;

export function authenticator(holder: ConfigHolder, now: () => number) {
  return async function authenticate(request: FastifyRequest): Promise<void> {
    const table = holder.current;
    if (!table) throw new NotReadyError();
    const header = request.headers.authorization;
    if (header === undefined || header === "") throw new MissingApiKeyError();
    const match = BEARER.exec(header);
    if (!match) throw new InvalidApiKeyError();
    const hash = createHash("sha256").update(match[1]!).digest("hex");
    const caller = table.keyByHash(hash);
    if (!caller) throw new InvalidApiKeyError();
    if (caller.expiresAtMs !== undefined && caller.expiresAtMs <= now()) throw new ExpiredApiKeyError();
    request.routeTable = table;
    request.caller = caller;
  };
}
