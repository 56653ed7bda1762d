/**
 * One call to a node-agent replica: POST the OpenAI body with the node token
 * and resolve when the answer's headers arrive. The node sends them as soon as
 * it admitted the request (docs/node-contract: a sign of life), so the
 * first-byte timeout measures admission, not the whole answer.
 *
 * Busy is not failure: a 429, or a 503 carrying Retry-After (a replica
 * unloading, a node draining), rejects with UPSTREAM_BUSY and the node's
 * Retry-After, which breakers forgive. Any other 5xx, a refused connection, a
 * reset, or no headers in time reject as failures, which breakers count. Both
 * let the caller try another replica. Other 4xx reject with the node's message
 * for the client. The signal aborts the call at any point, including while
 * the body streams, which stops the node generating: before the answer's
 * headers by closing the connection, after them by cancelling the call by its
 * id on the node (DELETE, crds/api nodeCancel) while the caller reads the rest
 * of the answer to its end, so the connection is kept for the next call. A
 * node that does not acknowledge the cancel, or end the answer within
 * CANCEL_GRACE_MS, has the connection closed.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { nodeCancel } from "../../crds/api/index.ts";
import { NotReadyError, UpstreamRejectedError } from "../errors.ts";
import type { NodeTransport } from "./node-transport.ts";

export interface UpstreamResponse {
  status: number;
  body: IncomingMessage;
}

/** The node failed or is busy: another replica may do better. */
export class UpstreamFailure extends Error {
  readonly code: "UPSTREAM_STATUS" | "UPSTREAM_BUSY" | "UPSTREAM_TIMEOUT" | "UPSTREAM_NETWORK";
  /** For UPSTREAM_BUSY: how long the node asked callers to wait (its Retry-After). */
  readonly retryAfterMs: number;
  constructor(code: UpstreamFailure["code"], message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options);
    this.code = code;
    this.retryAfterMs = options?.retryAfterMs ?? 0;
  }
}

/** A Retry-After the node sent, in ms; undefined when absent or not whole seconds. HTTP dates are not used by nodes. */
export function retryAfterMsOf(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || !/^\s*\d{1,6}\s*$/.test(value)) return undefined;
  return Math.max(1, Number(value)) * 1000;
}

export class ClientGoneError extends Error {
  readonly code = "CLIENT_GONE";
  constructor() {
    super("the client went away");
  }
}

const ERROR_BODY_LIMIT = 64 * 1024;
/** How long a cancelled answer may take to end before its connection is closed instead. */
const CANCEL_GRACE_MS = 2_000;

export class NodeClient {
  private readonly transport: NodeTransport;
  private readonly token: string;
  private readonly firstByteTimeoutMs: number;

  constructor(options: { transport: NodeTransport; nodeToken: string; firstByteTimeoutMs: number }) {
    this.transport = options.transport;
    this.token = options.nodeToken;
    this.firstByteTimeoutMs = options.firstByteTimeoutMs;
  }

  /**
   * `node` is the node the endpoint belongs to, which its certificate must name under mutual TLS.
   * `requestId` goes along as x-request-id, so a request can be followed into the node's logs.
   */
  post(url: string, node: string, payload: string, signal: AbortSignal, requestId: string): Promise<UpstreamResponse> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(new ClientGoneError());
        return;
      }
      if (!this.transport.ready) {
        // Not the node's fault, so no breaker counts it; the client is told to come back.
        reject(new NotReadyError("The gateway has no certificate for the model servers yet; try again shortly."));
        return;
      }
      const cancelId = randomUUID();
      const req = this.transport.request(url, node, {
        method: "POST",
        headers: {
          authorization: `Bearer ${this.token}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
          accept: "application/json, text/event-stream",
          "x-request-id": requestId,
          [nodeCancel.header]: cancelId,
        },
      });
      let answer: IncomingMessage | undefined;
      const onAbort = () => {
        if (answer) this.cancel(url, node, cancelId, answer);
        else req.destroy(new ClientGoneError());
      };
      signal.addEventListener("abort", onAbort, { once: true });
      req.once("close", () => {
        if (!answer) signal.removeEventListener("abort", onAbort);
      });
      const timer = setTimeout(() => {
        req.destroy(new UpstreamFailure("UPSTREAM_TIMEOUT", `no answer within ${this.firstByteTimeoutMs} ms`));
      }, this.firstByteTimeoutMs);
      req.once("response", (res) => {
        clearTimeout(timer);
        const status = res.statusCode ?? 502;
        if (status < 400) {
          answer = res;
          res.once("close", () => signal.removeEventListener("abort", onAbort));
          resolve({ status, body: res });
          return;
        }
        signal.removeEventListener("abort", onAbort);
        const retryAfterMs = retryAfterMsOf(res.headers["retry-after"]);
        readSmall(res).then(
          (text) => reject(failureFor(status, text, retryAfterMs)),
          (err) => reject(new UpstreamFailure("UPSTREAM_NETWORK", "the node's error answer broke off", { cause: err })),
        );
      });
      req.once("error", (err) => {
        clearTimeout(timer);
        // The client went away: not the node's failure, so the breaker does not count it.
        if (signal.aborted && !(err instanceof UpstreamFailure)) {
          reject(new ClientGoneError());
          return;
        }
        reject(
          err instanceof UpstreamFailure
            ? err
            : new UpstreamFailure(
                "UPSTREAM_NETWORK",
                `the node cannot be reached (${(err as NodeJS.ErrnoException).code ?? err.name})`,
                { cause: err },
              ),
        );
      });
      req.end(payload);
    });
  }

  close(): void {
    this.transport.close();
  }

  /**
   * Stop the node's generation for an answer whose headers arrived, keeping the connection: the node aborts the
   * call and ends the answer, which the caller reads to its end and drops. A cancel that cannot be sent, or an
   * answer that does not end in time, closes the connection instead, which stops the node too.
   */
  private cancel(url: string, node: string, cancelId: string, answer: IncomingMessage): void {
    // Only an answer still open: a complete one's connection may already carry another call.
    const close = () => {
      if (!answer.complete && !answer.destroyed) answer.destroy();
    };
    if (answer.complete || answer.destroyed) return;
    const deadline = setTimeout(close, CANCEL_GRACE_MS);
    answer.once("close", () => clearTimeout(deadline));
    const req = this.transport.request(new URL(nodeCancel.path(cancelId), url).href, node, {
      method: "DELETE",
      headers: { authorization: `Bearer ${this.token}` },
    });
    // Anything but 204 means the node is not stopping this call (it just ended, or the node predates
    // cancels): closing the connection stops it.
    req.once("response", (res) => {
      res.resume();
      if (res.statusCode !== 204) close();
    });
    req.once("error", close);
    req.end();
  }
}

function failureFor(status: number, text: string, retryAfterMs: number | undefined): Error {
  if (status === 429 || (status === 503 && retryAfterMs !== undefined)) {
    return new UpstreamFailure("UPSTREAM_BUSY", `the node is busy (${status})`, { retryAfterMs: retryAfterMs ?? 1000 });
  }
  if (status >= 500) return new UpstreamFailure("UPSTREAM_STATUS", `the node answered ${status}`);
  // Only these say the request itself is wrong (e.g. a prompt longer than the context). Anything else
  // (a token the node refuses, a replica the node no longer has after a stale config) is the node's side.
  if (status !== 400 && status !== 413 && status !== 422) {
    return new UpstreamFailure("UPSTREAM_STATUS", `the node answered ${status}`);
  }
  let message = `the model server refused the request (${status})`;
  let param: string | null = null;
  try {
    const parsed = JSON.parse(text) as { error?: { message?: unknown; param?: unknown } };
    if (typeof parsed.error?.message === "string") message = parsed.error.message.slice(0, 1000);
    if (typeof parsed.error?.param === "string") param = parsed.error.param;
  } catch {
    // Not JSON: keep the generic message.
  }
  return new UpstreamRejectedError(status, message, param);
}

export async function readSmall(res: IncomingMessage, limit = ERROR_BODY_LIMIT): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      res.destroy();
      break;
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}
