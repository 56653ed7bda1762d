/** A Server-Sent Events response written straight to the socket, as OpenAI streams: `data: {...}` and `data: [DONE]`. */
import type { ServerResponse } from "node:http";

export class EventStream {
  private readonly res: ServerResponse;

  constructor(res: ServerResponse) {
    this.res = res;
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
  }

  get open(): boolean {
    return !this.res.destroyed && !this.res.writableEnded;
  }

  send(data: unknown): void {
    if (this.open) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (this.open) this.res.end("data: [DONE]\n\n");
  }
}
