// A fast stand-in for a node-agent endpoint for the overhead benchmark: fixed OpenAI answers, no work,
// so what the benchmark measures is the HTTP path and the gateway, not inference.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

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

const server = createServer((req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (c: string) => {
    body += c;
  });
  req.on("end", () => {
    // Clients differ in JSON spacing (LiteLLM's Python client among them).
    if (/"stream"\s*:\s*true/.test(body)) {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.end(streamBody);
    } else {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(answer);
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => process.send?.({ port: (server.address() as AddressInfo).port }));
process.once("disconnect", () => process.exit(0));
