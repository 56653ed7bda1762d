/**
 * A Server-Sent Events response, as OpenAI streams: `data: {...}` and `data: [DONE]`, with `: keep-alive`
 * comments between them while the request waits or generates (admitted-response.ts for headers,
 * keep-alive and back-pressure).
 */
import type { ServerResponse } from "node:http";
import { AdmittedResponse, type ResponseTiming } from "./admitted-response.ts";

export class EventStream extends AdmittedResponse {
  constructor(res: ServerResponse, timing: ResponseTiming) {
    super(res, "text/event-stream", ": keep-alive\n\n", timing);
  }

  send(data: unknown): void {
    this.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    this.finish("data: [DONE]\n\n");
  }
}
