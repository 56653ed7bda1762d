// A fast stand-in for a node-agent endpoint for the gateway benchmarks: fixed OpenAI answers, no work,
// so what a benchmark measures is the HTTP path and the gateway, not inference.
//
//   node bench/_overhead-upstream.ts [hold ms]
//
// With a hold time each answer waits that long, so requests pile up in flight; the parent asks for the
// most that were in flight at once with the IPC message "peak" (which also resets it).
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { answerLoopStats } from "./_loop-stats.ts";

if (process.env.POMONA_BENCH_LOOP_STATS === "1") answerLoopStats();
const holdMs = Number(process.argv[2] ?? 0);
const answer = JSON.stringify({
  id: "chatcmpl-bench",
  object: "chat.completion",
  created: 0,
  model: "tiny",
  choices: [
    { index: 0, message: { role: "assistant", content: "Hello there, how can I help?" }, finish_reason: "stop" },
  ],
  usage: { prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 },
});
const chunk = (content: string) =>
  `data: ${JSON.stringify({ id: "chatcmpl-bench", object: "chat.completion.chunk", created: 0, model: "tiny", choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
const streamBody = `${["Hello", " there,", " how", " can", " I", " help?", " Ask", " away."].map(chunk).join("")}data: ${JSON.stringify({ id: "chatcmpl-bench", object: "chat.completion.chunk", created: 0, model: "tiny", choices: [], usage: { prompt_tokens: 5, completion_tokens: 8, total_tokens: 13 } })}\n\ndata: [DONE]\n\n`;

let inFlight = 0;
let peak = 0;
const server = createServer((req, res) => {
  inFlight++;
  peak = Math.max(peak, inFlight);
  res.once("close", () => inFlight--);
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (c: string) => {
    body += c;
  });
  req.on("end", () => {
    const send = () => {
      // Clients differ in JSON spacing (LiteLLM's Python client among them).
      if (/"stream"\s*:\s*true/.test(body)) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end(streamBody);
      } else {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(answer);
      }
    };
    if (holdMs > 0) setTimeout(send, holdMs);
    else send();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => process.send?.({ port: (server.address() as AddressInfo).port }));
process.on("message", (m) => {
  if (m !== "peak") return;
  process.send?.({ peak });
  peak = inFlight;
});
process.once("disconnect", () => process.exit(0));
