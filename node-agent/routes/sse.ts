/**
 * A Server-Sent Events response, as OpenAI streams: `data: {...}` and `data: [DONE]`, with `: keep-alive`
 * comments between them while the request waits or generates (admitted-response.ts for headers,
 * keep-alive and back-pressure).
 *
 * The generation runs on this process's main thread: node-llama-cpp hands over a token, and only once its
 * callbacks return does it queue the next token's evaluation, which it dispatches to llama.cpp in the next
 * `setImmediate` (its "nextCycle" batching). Serialising an event and writing it to the socket (a TLS
 * record and a system call) right in the callback would make every token wait for that work. So an event
 * the generation produces is only queued here, and written by a flush two `setImmediate` hops later:
 * the first hop runs beside that dispatch, the second after it, while llama.cpp evaluates. Events queued
 * before the flush go out in one write. There is no timer: the flush comes as soon as the event loop has
 * dispatched the evaluation, and an evaluation that finishes first only adds its event to the same write.
 * The first generated event is written at once (the time to first token stays as it was), and every other
 * write (the opening chunk, a choice's end, usage, errors, `[DONE]`, keep-alive) writes what is queued
 * first, so events keep their order.
 */
import type { ServerResponse } from "node:http";
import { AdmittedResponse, type ResponseTiming } from "./admitted-response.ts";

/** Queued events that force a flush at once (a bound on what is held, whatever the engine does). */
const MAX_QUEUED_EVENTS = 64;

export class EventStream extends AdmittedResponse {
  private queued: unknown[] = [];
  private flushScheduled = false;
  private generated = false;

  constructor(res: ServerResponse, timing: ResponseTiming) {
    super(res, "text/event-stream", ": keep-alive\n\n", timing);
  }

  /** An event written now, after any still queued. */
  send(data: unknown): void {
    this.queued.push(data);
    this.flushPending();
  }

  /** An event the generation produced: written at once if it is the first, else by the next flush. */
  sendGenerated(data: unknown): void {
    if (!this.generated) {
      this.generated = true;
      this.send(data);
      return;
    }
    this.queued.push(data);
    if (this.queued.length >= MAX_QUEUED_EVENTS) this.flushPending();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.afterDispatch);
    }
  }

  end(): void {
    this.finish("data: [DONE]\n\n");
  }

  private readonly afterDispatch = () => setImmediate(this.scheduledFlush);

  private readonly scheduledFlush = () => {
    this.flushScheduled = false;
    this.flushPending();
  };

  protected override flushPending(): void {
    if (this.queued.length === 0) return;
    let text = "";
    for (const data of this.queued) text += `data: ${JSON.stringify(data)}\n\n`;
    this.queued = [];
    if (this.open) this.res.write(text);
  }
}
