/**
 * How a model URL is shown in status, Events, logs and error messages: scheme, host and path only. Signed
 * URLs carry credentials in their query (X-Amz-Signature, token=…), and a URL may hold user:password.
 */
export function showUrl(url: string | URL): string {
  try {
    const u = typeof url === "string" ? new URL(url) : url;
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "(an unparseable URL)";
  }
}
