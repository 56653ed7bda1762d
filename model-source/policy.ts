/** The fetch policy both the operator and the node-agent build from their settings. */
import { judgeUrl, parseAllowedHosts, splitHostList } from "./allowed-hosts.ts";
import type { ModelSourcePolicy } from "./guarded-fetch.ts";

/** Largest model file a node downloads unless POMONA_MODEL_MAX_BYTES says otherwise. */
export const defaultModelMaxBytes = 512 * 2 ** 30;
/** A download that receives nothing for this long is cut (and resumed on the next attempt). */
export const defaultIdleTimeoutMs = 60_000;

/**
 * The allowed hosts are the Hub's defaults plus POMONA_MODEL_ALLOWED_HOSTS; an HF endpoint pointed at a
 * mirror (POMONA_HF_ENDPOINT) is allowed as an origin, as if listed, since an administrator named it.
 */
export function modelSourcePolicy(settings: {
  allowedHosts: string | undefined;
  hfEndpoint: string;
  maxBytes?: number;
  idleTimeoutMs?: number;
}): ModelSourcePolicy {
  const entries = splitHostList(settings.allowedHosts);
  const allowed = parseAllowedHosts(entries);
  const mirror = new URL(settings.hfEndpoint);
  const extra = judgeUrl(allowed, mirror).allowed === false ? [mirror.origin] : [];
  return {
    allowed: parseAllowedHosts(entries, extra),
    maxBytes: settings.maxBytes ?? defaultModelMaxBytes,
    idleTimeoutMs: settings.idleTimeoutMs ?? defaultIdleTimeoutMs,
  };
}
