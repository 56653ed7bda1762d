/**
 * Maps every error, ours or Fastify's, to one OpenAI error envelope (or, for a route in another wire
 * format, that format's envelope). Unknown errors are logged and answered as 500.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import {
  BodyTooLargeError,
  GatewayError,
  InternalError,
  InvalidRequestError,
  UnsupportedMediaTypeError,
} from "./errors.ts";
import { paramOf } from "./openai-schemas.ts";
import { ClientGoneError } from "./upstream/node-client.ts";

/** nginx's "client closed request", for the access log and metrics. */
const CLIENT_CLOSED = 499;

export function toGatewayError(err: unknown, bodyLimitBytes: number): GatewayError | undefined {
  if (err instanceof GatewayError) return err;
  if (hasZodFastifySchemaValidationErrors(err)) {
    const first = err.validation[0]!;
    const path = first.instancePath
      .split("/")
      .filter((p) => p !== "")
      .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
    if (first.keyword === "unrecognized_keys") {
      const keys = (first.params as { keys?: string[] }).keys ?? [];
      const name = paramOf([...path, keys[0] ?? ""]);
      return new InvalidRequestError(`Unrecognized request argument supplied: ${keys.join(", ")}`, name);
    }
    const param = paramOf(path);
    return new InvalidRequestError(`Invalid value for '${param ?? "body"}': ${first.message}`, param);
  }
  const fe = err as FastifyError;
  switch (fe.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return new BodyTooLargeError(bodyLimitBytes);
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return new UnsupportedMediaTypeError();
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return new InvalidRequestError("The request body is empty; send a JSON object.", null);
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return new InvalidRequestError("We could not parse the JSON body of your request.", null);
  }
  if (
    err instanceof SyntaxError ||
    (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500)
  ) {
    if (fe.statusCode === 413) return new BodyTooLargeError(bodyLimitBytes);
    if (fe.statusCode === 415) return new UnsupportedMediaTypeError();
    return new InvalidRequestError(
      err instanceof SyntaxError ? "We could not parse the JSON body of your request." : "The request is malformed.",
      null,
    );
  }
  return undefined;
}

export function errorHandler(
  bodyLimitBytes: number,
  envelope: (error: GatewayError) => unknown = (error) => error.envelope(),
) {
  return function handleError(err: unknown, request: FastifyRequest, reply: FastifyReply) {
    if (err instanceof ClientGoneError) {
      reply
        .code(CLIENT_CLOSED)
        .send({ error: { message: err.message, type: "invalid_request_error", param: null, code: "client_closed" } });
      return;
    }
    const known = toGatewayError(err, bodyLimitBytes);
    if (known) {
      if (known.status >= 500)
        request.log.warn({ code: known.code, cause: String((known.cause as Error)?.message ?? "") }, known.message);
      reply.code(known.status).headers(known.headers()).send(envelope(known));
      return;
    }
    request.log.error({ err }, "unexpected error");
    reply.code(500).send(envelope(new InternalError()));
  };
}
