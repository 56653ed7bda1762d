/**
 * The benchmarks' one client of a streamed completion: an SSE completion (or chat completion) over HTTP,
 * read to its end as a client reads it, with the figures every benchmark reports from it.
 */
import { type Dispatcher, request } from "undici";

export interface StreamFigures {
  /** ms from the call to the first piece of text; undefined if none came. */
  firstTextMs: number | undefined;
  tokens: number;
  /** From the call to the last token (over HTTP: to the stream's last byte). */
  seconds: number;
  /** Over HTTP through the gateway: the time it held the request in its waiting line (`x-pomona-queue-ms`). */
  queueMs?: number;
}

/**
 * Sends `body` as a streamed request with usage and temperature 0, and reads the stream to its end: the time
 * to the first event carrying text, the completion tokens of the usage chunk, the gateway's queue header.
 * The stream is only decoded as it comes, and parsed once it has ended, and it is read with undici's
 * `request` rather than `fetch` (whose WHATWG streams cost ~0.8 ms more per request on this machine), so the
 * client costs little beside the processes being measured.
 */
export async function readCompletionStream(
  url: string,
  authorization: string,
  body: Record<string, unknown>,
  dispatcher?: Dispatcher,
): Promise<StreamFigures> {
  const started = performance.now();
  const response = await request(url, {
    dispatcher,
    method: "POST",
    headers: { authorization, "content-type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true }, temperature: 0 }),
  });
  if (response.statusCode !== 200)
    throw new Error(`${url} answered ${response.statusCode}: ${(await response.body.text()).slice(0, 200)}`);
  const queued = response.headers["x-pomona-queue-ms"];
  response.body.setEncoding("utf8");
  let text = "";
  let firstTextMs: number | undefined;
  for await (const chunk of response.body) {
    text += chunk;
    if (firstTextMs === undefined && /"text":"[^"]|"content":"[^"]/.test(text))
      firstTextMs = performance.now() - started;
  }
  const seconds = (performance.now() - started) / 1000;
  const tokens = usageOf(text)?.completion_tokens;
  if (tokens === undefined) throw new Error(`${url} sent no usage chunk: ${text.slice(-200)}`);
  return { firstTextMs, tokens, seconds, queueMs: typeof queued === "string" ? Number(queued) : undefined };
}

/** The usage chunk of a whole SSE stream: searched from the end, where it comes, just before `[DONE]`. */
function usageOf(stream: string): { completion_tokens: number } | undefined {
  const events = stream.split("\n\n");
  for (let i = events.length - 1; i >= 0; i--) {
    const data = events[i]!.replace(/^data: /, "");
    if (!data.startsWith("{") || !data.includes('"usage"')) continue;
    const usage = (JSON.parse(data) as { usage?: { completion_tokens: number } }).usage;
    if (usage) return usage;
  }
  return undefined;
}
