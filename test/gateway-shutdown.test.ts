// A gateway that is shutting down answers a request still arriving on a kept-alive connection with
// "busy, retry" (503 + Retry-After in OpenAI's envelope), never Fastify's bare 503 that reads as a failure.
// The node is the fake node (test/support/fake-node.ts): it holds its answer so the close overlaps it.
import { connect } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { closeGracefully } from "../gateway/shutdown.ts";
import { FakeNode } from "./support/fake-node.ts";
import {
  ConfigFeed,
  createNamespace,
  makeKey,
  model,
  NODE_TOKEN,
  startGateway,
  type TestGateway,
} from "./support/gateway.ts";
import { eventually } from "./support/processes.ts";

const ns = "gw-shutdown";
const node = new FakeNode({ name: "mac-a", token: NODE_TOKEN });
const key = makeKey(ns, "k");
let gateway: TestGateway;

beforeAll(async () => {
  await createNamespace(ns);
  await node.start();
  gateway = await startGateway(ns);
  const feed = new ConfigFeed(ns);
  await feed.publish({ models: [model(ns, "tiny", { endpoints: [node.endpoint(ns, "tiny-a")] })], keys: [key] });
  await gateway.waitForVersion(feed.version);
});

afterAll(async () => {
  await gateway?.close().catch(() => {});
  await node.kill();
});

it("answers a request that arrives while it closes with 503, Retry-After and an OpenAI error", async () => {
  const release = node.hold();
  const { port } = new URL(gateway.url);
  const socket = connect(Number(port), "127.0.0.1");
  let received = "";
  socket.on("data", (chunk: Buffer) => {
    received += chunk.toString();
  });
  const ended = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  const body = JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }] });
  const auth = `authorization: Bearer ${key.secret}\r\nhost: gateway\r\n`;
  // A streamless request the node holds, so the connection is busy (not idle) when the close begins.
  socket.write(
    `POST /v1/chat/completions HTTP/1.1\r\n${auth}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  await eventually("the first request at the node", async () => node.seen.length > 0 || undefined);

  const closed = closeGracefully(gateway.app, 30_000);
  // The listener stops only after the close hooks ran, so from then on the gateway knows it is closing.
  await eventually("the gateway no longer listening", async () =>
    (await canConnect(Number(port))) ? undefined : true,
  );
  // The same connection, still open for the held answer, carries the next request.
  socket.write(`GET /v1/models HTTP/1.1\r\n${auth}\r\n`);
  release();
  await ended;
  await closed;

  const answers = received.split(/(?=HTTP\/1\.1 )/);
  expect(answers).toHaveLength(2);
  expect(answers[0]).toMatch(/^HTTP\/1\.1 200 /);
  const refused = answers[1] ?? "";
  expect(refused).toMatch(/^HTTP\/1\.1 503 /);
  expect(refused).toMatch(/\r\nretry-after: 1\r\n/i);
  const envelope = JSON.parse(refused.slice(refused.indexOf("\r\n\r\n") + 4)) as {
    error: { code: string; type: string };
  };
  expect(envelope.error).toMatchObject({ code: "gateway_shutting_down", type: "server_error" });
});

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(port, "127.0.0.1");
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}
