/** Every error a caller can get from the node-agent, each with a stable code, mapped once to OpenAI's envelope. */
import type { FastifyError } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { PromptTooLongError } from "./replica-engine.ts";
import { PoolClosedError, QueueFullError } from "./sequence-pool.ts";

type ErrorType = "invalid_request_error" | "authentication_error" | "not_found_error" | "server_error";

export class AgentError extends Error {
  readonly status: number;
  readonly type: ErrorType;
  readonly code: string;
  readonly param: string | null;
  /** Whole seconds for the Retry-After header of a busy or unavailable answer (429, 503). */
  readonly retryAfterSeconds: number | undefined;
  constructor(
    status: number,
    type: ErrorType,
    code: string,
    message: string,
    param: string | null = null,
    retryAfterSeconds?: number,
  ) {
    super(message);
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  envelope() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** The caller closed the connection; answered with nginx's 499 for the log, which nobody reads. */
export class ClientGoneError extends AgentError {
  constructor() {
    super(499, "invalid_request_error", "client_closed", "The client closed the connection.");
  }
}

export const unauthorized = () =>
  new AgentError(401, "authentication_error", "invalid_node_token", "A valid node token is required.");
export const replicaNotFound = (namespace: string, name: string) =>
  new AgentError(404, "not_found_error", "replica_not_found", `No ready replica ${namespace}/${name} on this node.`);
/** Busy is not failure: "come back later" answers carry Retry-After so the gateway tries elsewhere. */
export const draining = () =>
  new AgentError(503, "server_error", "node_draining", "This node is shutting down; try another replica.", null, 1);
export const unloading = (message = "this replica is unloading") =>
  new AgentError(503, "server_error", "replica_unloading", message, null, 1);
export const replicaBusy = (message: string, retryAfterSeconds: number) =>
  new AgentError(429, "server_error", "replica_busy", message, null, retryAfterSeconds);
export const invalid = (message: string, param: string | null) =>
  new AgentError(400, "invalid_request_error", "invalid_value", message, param);

/** Map any thrown value to an AgentError; undefined means an unexpected failure. */
export function toAgentError(err: unknown, promptParam = "prompt"): AgentError | undefined {
  if (err instanceof AgentError) return err;
  if (err instanceof QueueFullError) return replicaBusy(err.message, err.retryAfterSeconds);
  if (err instanceof PoolClosedError) return unloading(err.message);
  if (err instanceof PromptTooLongError)
    return new AgentError(400, "invalid_request_error", err.code, err.message, promptParam);
  if (hasZodFastifySchemaValidationErrors(err)) {
    const first = err.validation[0]!;
    const path = first.instancePath.split("/").filter((p) => p !== "");
    if (first.keyword === "unrecognized_keys") {
      const keys = (first.params as { keys?: string[] }).keys ?? [];
      return new AgentError(
        400,
        "invalid_request_error",
        "unsupported_parameter",
        `Unsupported parameter: ${keys.join(", ")} is not supported by this model server.`,
        [...path, keys[0] ?? ""].join("."),
      );
    }
    const param = path.length ? paramOf(path) : null;
    return invalid(`Invalid value for '${param ?? "body"}': ${first.message}`, param);
  }
  const fe = err as FastifyError;
  if (err instanceof SyntaxError || fe.code === "FST_ERR_CTP_INVALID_JSON_BODY")
    return invalid("We could not parse the JSON body of your request.", null);
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500)
    return new AgentError(fe.statusCode, "invalid_request_error", "bad_request", fe.message, null);
  return undefined;
}

/** OpenAI writes params like messages[0].content. */
function paramOf(path: string[]): string {
  return path.reduce((out, p) => (/^\d+$/.test(p) ? `${out}[${p}]` : out ? `${out}.${p}` : p), "");
}
