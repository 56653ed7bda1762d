/**
 * A stand-in for one node-agent replica endpoint, speaking the node-agent's
 * contract (docs/components.md): OpenAI paths under /replicas/<ns>/<replica>,
 * bearer node token, usage in streams when asked, cancel by id (DELETE
 * /requests/<id> ends the answer where it is). It is a fake of our own
 * component, used only where a fault is the point (a node that fails, hangs,
 * streams slowly, dies mid-traffic) or where the gateway's own overhead and
 * bookkeeping must be measured exactly; real inference is tested against the
 * real node-agent.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { nodeCancel } from "../../crds/api/index.ts";

/**
 * busy: 429 `replica_busy` with Retry-After, as a node whose sequences and queue are full (docs/node-contract.md);
 * unloading: 503 `replica_unloading` with Retry-After; late-error: headers at admission, then the error envelope
 * in a 200 body (a generation that failed after the headers went out).
 */
export type FakeNodeMode = "ok" | "fail" | "hang" | "reject" | "busy" | "unloading" | "late-error";

export interface FakeNodeOptions {
  name: string;
  token: string;
  /** Tokens a stream sends, one chunk each. */
  streamTokens?: number;
  /** Pause between streamed chunks. */
  tokenDelayMs?: number;
  /** Completion tokens reported in usage. */
  completionTokens?: number;
  /** Pause before answering a non-streaming request. */
  answerDelayMs?: number;
  /** Characters of content per streamed chunk. */
  chunkChars?: number;
  /** Wait for 'drain' when a write returns false, as the real node-agent's stream does. */
  respectBackpressure?: boolean;
  /**
   * Answer non-streamed requests as the contract's node does: headers at admission, a space every
   * keepAliveMs while "generating" (answerDelayMs), then the JSON. Off: headers only with the answer.
   */
  earlyHeaders?: boolean;
  keepAliveMs?: number;
  /** Requests it serves at once; beyond that it answers busy (429 with Retry-After), as a full node does. */
  capacity?: number;
  /** Retry-After seconds of its busy answers. */
  retryAfterSeconds?: number;
  /** The error code of its late-error answers (default internal_error). */
  lateErrorCode?: string;
  /** False: a node from before cancels by id, which answers 404 to the cancel and keeps generating. */
  cancelById?: boolean;
}

export interface SeenRequest {
  path: string;
  body: Record<string, unknown>;
  authorization: string | undefined;
  requestId: string | undefined;
}

export class FakeNode {
  readonly options: FakeNodeOptions;
  mode: FakeNodeMode = "ok";
  readonly seen: SeenRequest[] = [];
  /** Streams whose client (the gateway) went away before the end. */
  streamsAborted = 0;
  streamsFinished = 0;
  /** Chunks written across all streams, to see that generation stopped. */
  chunksWritten = 0;
  active = 0;
  /** Requests that reached the answering stage, ever. */
  arrived = 0;
  /** Most requests it served at once. */
  maxActive = 0;
  /** Busy answers (429) it gave. */
  busyAnswers = 0;
  /** Cancels by id (DELETE /requests/<id>) that found their request. */
  cancels = 0;
  /** Running requests by the cancel id the gateway sent, each with its cancel. */
  private readonly cancellable = new Map<string, () => void>();
  private gate: Promise<void> | undefined;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(options: FakeNodeOptions) {
    this.options = options;
  }

  async start(port = 0): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on("connection", (s) => {
      this.sockets.add(s);
      s.once("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(port, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** Hold every answer until the returned function is called, so a test decides when requests finish. */
  hold(): () => void {
    let release = () => {};
    this.gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    return () => {
      this.gate = undefined;
      release();
    };
  }

  /** `slots` is what the gateway may send at once; the fake itself has no limit, so the default is generous. */
  endpoint(namespace: string, replica = this.options.name, slots = 64) {
    return {
      url: `http://127.0.0.1:${this.port}/replicas/${namespace}/${replica}`,
      replica,
      node: this.options.name,
      weight: 1,
      slots,
    };
  }

  /** Die as a crashed node does: stop listening and cut every open connection. */
  async kill(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const path = (req.url ?? "").replace(/^\/replicas\/[^/]+\/[^/]+/, "");
    if (req.headers.authorization !== `Bearer ${this.options.token}`) {
      res.writeHead(401, { "content-type": "application/json" }).end('{"error":{"message":"bad node token"}}');
      return;
    }
    const cancelled = /^\/requests\/([^/]+)$/.exec(req.url ?? "");
    if (req.method === "DELETE" && cancelled && this.options.cancelById === false) {
      res.writeHead(404, { "content-type": "application/json" }).end('{"error":{"message":"no route"}}');
      return;
    }
    if (req.method === "DELETE" && cancelled) {
      const cancel = this.cancellable.get(cancelled[1] as string);
      if (cancel) {
        this.cancels++;
        cancel();
      }
      res.writeHead(cancel ? 204 : 404).end();
      return;
    }
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      res.writeHead(400).end();
      return;
    }
    this.seen.push({
      path,
      body,
      authorization: req.headers.authorization,
      requestId: req.headers["x-request-id"] as string | undefined,
    });
    if (this.mode === "fail") {
      res.writeHead(500, { "content-type": "application/json" }).end('{"error":{"message":"node failure"}}');
      return;
    }
    if (this.mode === "reject") {
      res
        .writeHead(400, { "content-type": "application/json" })
        .end('{"error":{"message":"the prompt is longer than the context","param":"messages"}}');
      return;
    }
    if (this.mode === "hang") return; // never answers; the socket stays open
    const retryAfter = String(this.options.retryAfterSeconds ?? 1);
    if (this.mode === "busy" || (this.options.capacity !== undefined && this.active >= this.options.capacity)) {
      this.busyAnswers++;
      res
        .writeHead(429, { "content-type": "application/json", "retry-after": retryAfter })
        .end('{"error":{"message":"every sequence is busy","type":"server_error","param":null,"code":"replica_busy"}}');
      return;
    }
    if (this.mode === "unloading") {
      res
        .writeHead(503, { "content-type": "application/json", "retry-after": retryAfter })
        .end('{"error":{"message":"unloading","type":"server_error","param":null,"code":"replica_unloading"}}');
      return;
    }
    if (this.mode === "late-error") {
      res.writeHead(200, { "content-type": "application/json" });
      res.write(" ");
      const code = this.options.lateErrorCode ?? "internal_error";
      res.end(JSON.stringify({ error: { message: "generation failed", type: "server_error", param: null, code } }));
      return;
    }
    this.active++;
    this.arrived++;
    this.maxActive = Math.max(this.maxActive, this.active);
    res.once("close", () => this.active--);
    // A cancel ends the answer where it is, as the node-agent does, and the connection stays open.
    const state = { cancelled: false };
    const cancelId = req.headers[nodeCancel.header];
    if (typeof cancelId === "string") {
      this.cancellable.set(cancelId, () => {
        state.cancelled = true;
      });
      res.once("close", () => this.cancellable.delete(cancelId));
    }
    const usage = {
      prompt_tokens: 5,
      completion_tokens: this.options.completionTokens ?? 3,
      total_tokens: 5 + (this.options.completionTokens ?? 3),
    };
    if (body.stream === true) {
      await this.stream(res, body, usage, state);
      return;
    }
    let keepAlive: NodeJS.Timeout | undefined;
    if (this.options.earlyHeaders) {
      res.writeHead(200, { "content-type": "application/json" });
      keepAlive = setInterval(() => res.write(" "), this.options.keepAliveMs ?? 10_000);
    }
    if (this.gate) await this.gate;
    if (this.options.answerDelayMs) await new Promise((r) => setTimeout(r, this.options.answerDelayMs));
    clearInterval(keepAlive);
    if (state.cancelled) {
      res.end();
      return;
    }
    const created = Math.floor(Date.now() / 1000);
    let answer: unknown;
    if (path === "/v1/embeddings") {
      const inputs = Array.isArray(body.input) ? body.input : [body.input];
      answer = {
        object: "list",
        model: body.model,
        data: inputs.map((_, index) => ({ object: "embedding", index, embedding: [0.1, 0.2, 0.3] })),
        usage: { prompt_tokens: 4, total_tokens: 4 },
      };
    } else if (path === "/v1/completions") {
      answer = {
        id: "cmpl-1",
        object: "text_completion",
        created,
        model: body.model,
        choices: [{ index: 0, text: ` from ${this.options.name}`, finish_reason: "stop", logprobs: null }],
        usage,
      };
    } else {
      answer = {
        id: "chatcmpl-1",
        object: "chat.completion",
        created,
        model: body.model,
        choices: [
          { index: 0, message: { role: "assistant", content: `from ${this.options.name}` }, finish_reason: "stop" },
        ],
        usage,
      };
    }
    if (!res.headersSent) res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(answer));
  }

  private async stream(
    res: ServerResponse,
    body: Record<string, unknown>,
    usage: object,
    state: { cancelled: boolean },
  ): Promise<void> {
    res.writeHead(200, { "content-type": "text/event-stream" });
    const created = Math.floor(Date.now() / 1000);
    const chunk = (delta: object, finish: string | null) =>
      `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", created, model: body.model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
    const count = this.options.streamTokens ?? 3;
    for (let i = 0; i < count; i++) {
      if (res.destroyed || state.cancelled) {
        this.streamsAborted++;
        res.end();
        return;
      }
      const pad = this.options.chunkChars ? "x".repeat(this.options.chunkChars) : "";
      const flowing = res.write(
        chunk(i === 0 ? { role: "assistant", content: `tok0${pad}` } : { content: ` tok${i}${pad}` }, null),
      );
      this.chunksWritten++;
      if (!flowing && this.options.respectBackpressure) {
        await new Promise<void>((resolve) => {
          res.once("drain", resolve);
          res.once("close", resolve);
        });
      }
      if (this.options.tokenDelayMs) await new Promise((r) => setTimeout(r, this.options.tokenDelayMs));
    }
    if (res.destroyed || state.cancelled) {
      this.streamsAborted++;
      res.end();
      return;
    }
    res.write(chunk({}, "stop"));
    const streamOptions = body.stream_options as { include_usage?: boolean } | undefined;
    if (streamOptions?.include_usage) {
      res.write(
        `data: ${JSON.stringify({ id: "chatcmpl-1", object: "chat.completion.chunk", created, model: body.model, choices: [], usage })}\n\n`,
      );
    }
    res.end("data: [DONE]\n\n");
    this.streamsFinished++;
  }
}
