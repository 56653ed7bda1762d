/**
 * Where model files may come from. Two kinds of entries, so that what is trusted is said plainly:
 *
 * - a host name or pattern, `huggingface.co` or `*.hf.co` (any subdomain): https only, any port, and
 *   every address the name resolves to must be public (address-policy.ts), checked at connection time;
 * - a full origin, `https://mirror.internal:8443` or `http://127.0.0.1:8123`: exactly that scheme, host
 *   and port, trusted as named, private addresses included, since an administrator wrote it down.
 *
 * Every redirect hop is checked again against the same list, so an allowed origin cannot hand a
 * download on to an address nobody allowed. The defaults are the Hugging Face Hub and its CDNs.
 */
import { isIP } from "node:net";

export const defaultModelHosts = ["huggingface.co", "*.huggingface.co", "hf.co", "*.hf.co"] as const;

export interface HostRule {
  /** A name, or a suffix for a `*.` pattern. */
  host: string;
  wildcard: boolean;
}

export interface AllowedHosts {
  hosts: HostRule[];
  /** Origins (scheme://host:port) trusted as named. */
  origins: Set<string>;
}

/** Entries as written in POMONA_MODEL_ALLOWED_HOSTS (comma-separated), added to the defaults. */
export function parseAllowedHosts(entries: readonly string[], extraOrigins: readonly string[] = []): AllowedHosts {
  const allowed: AllowedHosts = { hosts: [], origins: new Set() };
  for (const raw of [...defaultModelHosts, ...entries]) {
    const entry = raw.trim().toLowerCase();
    if (entry === "") continue;
    if (entry.includes("://")) {
      allowed.origins.add(originOf(entry));
      continue;
    }
    const wildcard = entry.startsWith("*.");
    const host = wildcard ? entry.slice(2) : entry;
    if (!/^[a-z0-9.-]+$/.test(host) && isIP(host.replace(/^\[|\]$/g, "")) === 0)
      throw new Error(`'${raw}' is neither a host name, a *.domain pattern nor an origin like https://host:port`);
    allowed.hosts.push({ host: host.replace(/^\[|\]$/g, ""), wildcard });
  }
  for (const origin of extraOrigins) allowed.origins.add(originOf(origin));
  return allowed;
}

export function splitHostList(text: string | undefined): string[] {
  return (text ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function originOf(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`'${text}' is not an origin like https://host:port`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error(`'${text}' is not an http(s) origin`);
  return url.origin;
}

/** How a URL is allowed: as an origin named outright, as a public host, or not at all (with the reason). */
export type HostVerdict = { allowed: "origin" } | { allowed: "public-host" } | { allowed: false; reason: string };

export function judgeUrl(allowed: AllowedHosts, url: URL): HostVerdict {
  if (allowed.origins.has(url.origin)) return { allowed: "origin" };
  if (url.protocol !== "https:") return { allowed: false, reason: `${url.protocol} is not allowed, only https` };
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, "");
  const match = allowed.hosts.some((rule) => (rule.wildcard ? host.endsWith(`.${rule.host}`) : host === rule.host));
  return match
    ? { allowed: "public-host" }
    : { allowed: false, reason: `the host ${host} is not among the allowed model hosts (POMONA_MODEL_ALLOWED_HOSTS)` };
}
