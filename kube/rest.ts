/**
 * The few Kubernetes REST calls the operator, the gateway and the node-agent make (get, create, replace,
 * patch, delete by path), with a KubeConfig's own authentication and TLS. Why not client-node's generated
 * API classes: importing any of them loads every generated API and model class, ~46 MiB of the operator's RSS
 * (docs/decisions.md, "The operator calls the Kubernetes API through kube/rest.ts").
 * Objects go and come back as plain JSON: times are strings, as in watch events.
 */
import type { KubeConfig } from "@kubernetes/client-node";
// The request context alone (gen/http), not the generated APIs: KubeConfig fills in headers and the dispatcher.
import { HttpMethod, RequestContext } from "@kubernetes/client-node/dist/gen/http/http.js";
import { request } from "undici";

/** An answer of the API server other than 2xx: `code` is the HTTP status (as client-node's ApiException). */
export class KubeApiError extends Error {
  readonly code: number;
  /** The Status reason (`NotFound`, `AlreadyExists`, `Conflict` …) when the server sent one. */
  readonly reason: string | undefined;

  constructor(code: number, reason: string | undefined, message: string) {
    super(message);
    this.name = "KubeApiError";
    this.code = code;
    this.reason = reason;
  }
}

export type Query = Record<string, string | number | boolean | undefined>;

/** Content types of the patches Pomona sends. */
export const patchTypes = {
  apply: "application/apply-patch+yaml",
  merge: "application/merge-patch+json",
} as const;

/** Longest part of an unparseable error body quoted in a KubeApiError. */
const MAX_QUOTED = 300;

export class KubeRest {
  private readonly kubeConfig: KubeConfig;

  constructor(kubeConfig: KubeConfig) {
    this.kubeConfig = kubeConfig;
  }

  get<T>(path: string, query?: Query): Promise<T> {
    return this.call<T>("GET", path, query);
  }

  /** POST to a collection. */
  create<T>(path: string, body: unknown, query?: Query): Promise<T> {
    return this.call<T>("POST", path, query, body, "application/json");
  }

  /** PUT: the body carries its resourceVersion, so a concurrent change fails with 409. */
  replace<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>("PUT", path, undefined, body, "application/json");
  }

  patch<T>(path: string, body: unknown, type: keyof typeof patchTypes, query?: Query): Promise<T> {
    return this.call<T>("PATCH", path, query, body, patchTypes[type]);
  }

  async delete(path: string, query?: Query): Promise<void> {
    await this.call("DELETE", path, query);
  }

  private async call<T>(
    method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
    path: string,
    query: Query | undefined,
    body?: unknown,
    contentType?: string,
  ): Promise<T> {
    const server = this.kubeConfig.getCurrentCluster()?.server;
    if (!server) throw new Error("the kubeconfig names no cluster server");
    const url = new URL(path, server);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const context = new RequestContext(url.toString(), HttpMethod[method]);
    context.setHeaderParam("Accept", "application/json");
    if (contentType) context.setHeaderParam("Content-Type", contentType);
    await this.kubeConfig.applySecurityAuthentication(context);
    const response = await request(url, {
      method,
      headers: context.getHeaders(),
      dispatcher: context.getDispatcher(),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.body.text();
    if (response.statusCode >= 200 && response.statusCode < 300) return (text ? JSON.parse(text) : undefined) as T;
    throw apiError(method, url.pathname, response.statusCode, text);
  }
}

/** The server's Status message, never the request: a Secret's data must not end up in a log line. */
function apiError(method: string, path: string, code: number, text: string): KubeApiError {
  let reason: string | undefined;
  let message: string | undefined;
  try {
    const status = JSON.parse(text) as { reason?: unknown; message?: unknown };
    if (typeof status.reason === "string") reason = status.reason;
    if (typeof status.message === "string") message = status.message;
  } catch {}
  message ??= text.slice(0, MAX_QUOTED) || "no message";
  return new KubeApiError(code, reason, `${method} ${path}: ${code}${reason ? ` ${reason}` : ""}: ${message}`);
}

/** For a log line: a KubeApiError's message is the API server's answer (status, reason, message), never what was sent. */
export const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** The cluster's CertificateSigningRequests; one request's path is this plus `/${name}`. */
export const certificateSigningRequestsPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

/** The collection of Secrets in a namespace; a Secret's own path is this plus `/${name}`. */
export const secretsPath = (namespace: string): string => `/api/v1/namespaces/${namespace}/secrets`;
