/**
 * The answer to an admitted request, written straight to the socket. Its 200 headers go out the moment the
 * request is admitted (node-contract: the gateway's first-byte timeout measures admission), then keep-alive
 * bytes every interval while the request waits or generates, then the answer. Writes respect the socket's
 * back-pressure: `gate()` tells the generation to wait while the socket's buffer is full, and a reader
 * that stays stalled past the stall timeout has its connection destroyed, which cancels its generation and
 * frees its sequence. What is buffered per response is bounded by the socket's high-water mark plus the
 * events of one event-loop turn (sse.ts), since nothing more is generated until it drains.
 */
import type { ServerResponse } from "node:http";

export interface ResponseTiming {
  /** Milliseconds between keep-alive bytes while nothing else is written. */
  keepAliveMs: number;
  /** Milliseconds a full socket buffer may go undrained before the generation is cancelled. */
  stallMs: number;
}

export class AdmittedResponse {
  protected readonly res: ServerResponse;
  private readonly timing: ResponseTiming;
  private readonly keepAliveText: string;
  private readonly keepAlive: NodeJS.Timeout;
  private draining: Promise<void> | undefined;
  /** True once the reader stalled past the timeout and the connection was destroyed. */
  stalled = false;
  /** Whether a generation is waiting for the socket to drain now. */
  paused = false;

  constructor(res: ServerResponse, contentType: string, keepAliveText: string, timing: ResponseTiming) {
    this.res = res;
    this.timing = timing;
    this.keepAliveText = keepAliveText;
    res.writeHead(200, {
      "content-type": contentType,
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    res.flushHeaders();
    this.keepAlive = setInterval(() => {
      this.flushPending();
      // A full buffer already tells the reader nothing new; adding to it would only grow it.
      if (this.open && !res.writableNeedDrain) res.write(this.keepAliveText);
    }, timing.keepAliveMs);
    res.once("close", () => clearInterval(this.keepAlive));
  }

  get open(): boolean {
    return !this.res.destroyed && !this.res.writableEnded;
  }

  /** Writes what a subclass still holds back (sse.ts), so whatever is written next comes after it. */
  protected flushPending(): void {}

  /**
   * Ends the answer where it is, after a cancel or a reader that left: over a connection that is still open
   * (the gateway cancelled by id and reads on to the end), the end lets it carry the next call.
   */
  abandon(): void {
    this.finish("");
  }

  protected finish(text: string): void {
    clearInterval(this.keepAlive);
    this.flushPending();
    if (this.open) this.res.end(text);
  }

  /**
   * Undefined while the socket takes more; otherwise a promise that settles when it drains or closes. If
   * it does neither within the stall timeout, the connection is destroyed (the close aborts the request).
   */
  gate = (): Promise<void> | undefined => {
    if (!this.open || !this.res.writableNeedDrain) return undefined;
    this.draining ??= new Promise<void>((resolve) => {
      this.paused = true;
      const done = () => {
        clearTimeout(timer);
        this.res.off("drain", done);
        this.res.off("close", done);
        this.paused = false;
        this.draining = undefined;
        resolve();
      };
      const timer = setTimeout(() => {
        this.stalled = true;
        this.res.destroy();
        done();
      }, this.timing.stallMs);
      this.res.once("drain", done);
      this.res.once("close", done);
    });
    return this.draining;
  };
}

/** A non-streamed JSON answer: spaces as keep-alive (JSON allows leading whitespace), then the JSON. */
export class JsonAnswer extends AdmittedResponse {
  constructor(res: ServerResponse, timing: ResponseTiming) {
    super(res, "application/json; charset=utf-8", " ", timing);
  }

  /** The answer, or an OpenAI error envelope when generation failed after the headers went out. */
  end(body: unknown): void {
    this.finish(JSON.stringify(body));
  }
}
