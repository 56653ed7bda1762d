/**
 * Every error the gateway answers with: one class per case, a stable code and
 * status, mapped once to OpenAI's envelope `{ error: { message, type, param, code } }`.
 * Messages never contain a key, a token or an upstream URL.
 */

export type OpenAiErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "permission_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error";

export abstract class GatewayError extends Error {
  abstract readonly status: number;
  abstract readonly type: OpenAiErrorType;
  abstract readonly code: string;
  readonly param: string | null = null;
  /** Extra response headers, e.g. retry-after. */
  headers(): Record<string, string> {
    return {};
  }
  envelope() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export class MissingApiKeyError extends GatewayError {
  readonly status = 401;
  readonly type = "invalid_request_error";
  readonly code = "missing_api_key";
  constructor(message = "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.") {
    super(message);
  }
}

export class InvalidApiKeyError extends GatewayError {
  readonly status = 401;
  readonly type = "invalid_request_error";
  readonly code = "invalid_api_key";
  constructor() {
    super("Incorrect API key provided, or the key is disabled.");
  }
}

export class ExpiredApiKeyError extends GatewayError {
  readonly status = 401;
  readonly type = "invalid_request_error";
  readonly code = "expired_api_key";
  constructor() {
    super("The API key has expired.");
  }
}

export class ModelNotAllowedError extends GatewayError {
  readonly status = 403;
  readonly type = "permission_error";
  readonly code = "model_not_allowed";
  override readonly param = "model";
  constructor(model: string) {
    super(`This API key may not use the model '${model}'.`);
  }
}

export class ModelNotFoundError extends GatewayError {
  readonly status = 404;
  readonly type = "invalid_request_error";
  readonly code = "model_not_found";
  override readonly param = "model";
  constructor(model: string) {
    super(`The model '${model}' does not exist.`);
  }
}

export class RouteNotFoundError extends GatewayError {
  readonly status = 404;
  readonly type = "invalid_request_error";
  readonly code = "unknown_url";
  constructor(method: string) {
    super(`Unknown request URL for method ${method}.`);
  }
}

export class InvalidRequestError extends GatewayError {
  readonly status = 400;
  readonly type = "invalid_request_error";
  readonly code = "invalid_request";
  override readonly param: string | null;
  constructor(message: string, param: string | null) {
    super(message);
    this.param = param;
  }
}

export class UnsupportedMediaTypeError extends GatewayError {
  readonly status = 415;
  readonly type = "invalid_request_error";
  readonly code = "unsupported_media_type";
  constructor() {
    super("Send the request body as application/json.");
  }
}

export class BodyTooLargeError extends GatewayError {
  readonly status = 413;
  readonly type = "invalid_request_error";
  readonly code = "request_too_large";
  constructor(limitBytes: number) {
    super(`The request body is larger than ${limitBytes} bytes.`);
  }
}

export type LimitKind = "requests" | "tokens_per_minute" | "tokens_per_day" | "concurrent_requests";

export class RateLimitedError extends GatewayError {
  readonly status = 429;
  readonly type = "rate_limit_error";
  readonly code = "rate_limit_exceeded";
  readonly limit: LimitKind;
  readonly retryAfterMs: number;
  readonly limitValue: number;
  constructor(limit: LimitKind, limitValue: number, retryAfterMs: number, policy: string) {
    super(`Rate limit reached: ${limit.replaceAll("_", " ")} of policy '${policy}' (limit ${limitValue}).`);
    this.limit = limit;
    this.retryAfterMs = retryAfterMs;
    this.limitValue = limitValue;
  }
  override headers(): Record<string, string> {
    const seconds = Math.max(1, Math.ceil(this.retryAfterMs / 1000));
    const resetHeader = this.limit === "requests" ? "x-ratelimit-reset-requests" : "x-ratelimit-reset-tokens";
    const limitHeader = this.limit === "requests" ? "x-ratelimit-limit-requests" : "x-ratelimit-limit-tokens";
    const remainingHeader =
      this.limit === "requests" ? "x-ratelimit-remaining-requests" : "x-ratelimit-remaining-tokens";
    return {
      "retry-after": String(seconds),
      "retry-after-ms": String(Math.ceil(this.retryAfterMs)),
      [limitHeader]: String(this.limitValue),
      [remainingHeader]: "0",
      [resetHeader]: `${seconds}s`,
    };
  }
}

export class TooManyInvalidKeysError extends GatewayError {
  readonly status = 429;
  readonly type = "rate_limit_error";
  readonly code = "too_many_invalid_api_keys";
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number) {
    super("Too many requests with an invalid API key came from this address; try again later.");
    this.retryAfterMs = retryAfterMs;
  }
  override headers(): Record<string, string> {
    return { "retry-after": String(Math.max(1, Math.ceil(this.retryAfterMs / 1000))) };
  }
}

export class LimitsUnavailableError extends GatewayError {
  readonly status = 503;
  readonly type = "server_error";
  readonly code = "limits_unavailable";
  constructor() {
    super("Rate limits cannot be checked right now; try again shortly.");
  }
  override headers(): Record<string, string> {
    return { "retry-after": "1" };
  }
}

/** A request that reaches a gateway already shutting down (a kept-alive connection): busy, not failed. */
export class GatewayClosingError extends GatewayError {
  readonly status = 503;
  readonly type = "server_error";
  readonly code = "gateway_shutting_down";
  constructor() {
    super("This gateway is shutting down; retry the request.");
  }
  override headers(): Record<string, string> {
    return { "retry-after": "1", connection: "close" };
  }
}

export class PolicyMissingError extends GatewayError {
  readonly status = 503;
  readonly type = "server_error";
  readonly code = "rate_limit_policy_missing";
  constructor(model: string, policy: string) {
    super(`The model '${model}' is not served while its rate limit policy '${policy}' does not exist.`);
  }
}

export class NotReadyError extends GatewayError {
  readonly status = 503;
  readonly type = "server_error";
  readonly code = "gateway_not_ready";
  constructor(message = "The gateway has no configuration yet; try again shortly.") {
    super(message);
  }
  override headers(): Record<string, string> {
    return { "retry-after": "1" };
  }
}

export class NoReplicaError extends GatewayError {
  readonly status = 503;
  readonly type = "server_error";
  readonly code = "no_replica_available";
  readonly retryAfterSeconds: number;
  /** `retryAfterSeconds`: the busy node's own Retry-After when that is why, else 1. */
  constructor(model: string, retryAfterSeconds = 1) {
    super(`No replica of the model '${model}' or its fallbacks can serve right now.`);
    this.retryAfterSeconds = Math.max(1, Math.ceil(retryAfterSeconds));
  }
  override headers(): Record<string, string> {
    return { "retry-after": String(this.retryAfterSeconds) };
  }
}

/** The model's waiting line is full: the client should come back shortly. */
export class ModelQueueFullError extends GatewayError {
  readonly status = 429;
  readonly type = "rate_limit_error";
  readonly code = "model_queue_full";
  constructor(model: string) {
    super(`The model '${model}' is busy and its waiting line is full; retry shortly.`);
  }
  override headers(): Record<string, string> {
    return { "retry-after": "1" };
  }
}

/** A fault of the gateway itself; the cause goes to the log, never to the client. */
export class InternalError extends GatewayError {
  readonly status = 500;
  readonly type = "server_error";
  readonly code = "internal_error";
  constructor() {
    super("The gateway failed to handle the request.");
  }
}

export class UpstreamError extends GatewayError {
  readonly status = 502;
  readonly type = "server_error";
  readonly code: string = "upstream_error";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A node's answer (or one event of its stream) is larger than the gateway will hold in memory. */
export class UpstreamResponseTooLargeError extends UpstreamError {
  override readonly code = "upstream_response_too_large";
  constructor(what: "answer" | "stream event", limitBytes: number) {
    super(
      what === "answer"
        ? `The model server's answer is larger than the gateway's limit of ${limitBytes} bytes.`
        : `An event in the model server's stream is larger than the gateway's limit of ${limitBytes} bytes.`,
    );
  }
}

export class UpstreamTimeoutError extends GatewayError {
  readonly status = 504;
  readonly type = "server_error";
  readonly code = "upstream_timeout";
  constructor(message: string) {
    super(message);
  }
}

/** An error from the node-agent with a 4xx status, such as a prompt longer than the context: the client's to fix. */
export class UpstreamRejectedError extends GatewayError {
  readonly status: number;
  readonly type = "invalid_request_error";
  readonly code = "upstream_rejected";
  override readonly param: string | null;
  constructor(status: number, message: string, param: string | null) {
    super(message);
    this.status = status;
    this.param = param;
  }
}
