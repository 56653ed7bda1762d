// The gateway's mutual TLS transport against the real node-agent app serving TLS (certificates made by the
// operator's own signing code): calls to one node share one verified connection instead of a TLS handshake
// each, a certificate for another node or another address is still refused before any request is sent,
// the node refuses a client certificate that is not the gateway's, and a new credential goes into new
// connections.
import type { IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodeIdentity } from "../crds/api/index.ts";
import { type ClientCredential, MutualTlsTransport } from "../gateway/upstream/node-transport.ts";
import { buildApp, createLogger } from "../node-agent/app.ts";
import { createMetrics } from "../node-agent/metrics.ts";
import {
  type Credential,
  createCertificateAuthority,
  generateKeyPair,
  privateKeyPem,
  signCertificate,
  type Usage,
} from "../pki/x509.ts";

const TOKEN = "transport-test-token";
const NODE = "transport-node";
const DAY_MS = 24 * 3600_000;
let ca: Credential;
let app: FastifyInstance;
let base: string;
let handshakes = 0;
let requests = 0;

async function issue(commonName: string, usage: Usage, ip?: string): Promise<ClientCredential> {
  const keys = await generateKeyPair();
  const altNames = ip ? [{ type: "ip" as const, value: ip }] : [];
  const cert = await signCertificate({ ca, commonName, altNames, publicKey: keys, usage, lifetimeMs: DAY_MS });
  return { cert, key: await privateKeyPem(keys), ca: ca.cert };
}

/** One call as the gateway makes it; resolves with the node's status once its body is read. */
const BODY = JSON.stringify({ model: "none", prompt: "hello" });

function call(transport: MutualTlsTransport, url: string, node: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = transport.request(url, node, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", "content-length": BODY.length },
    });
    req.once("response", (res: IncomingMessage) => {
      res.resume();
      res.once("end", () => resolve(res.statusCode ?? 0));
    });
    req.once("error", reject);
    req.end(BODY);
  });
}

beforeAll(async () => {
  ca = await createCertificateAuthority("transport-test-ca", DAY_MS);
  const serving = await issue(nodeIdentity.nodeCommonName(NODE), "server", "127.0.0.1");
  app = buildApp({
    // No replica: a call that passed the token and the client certificate gets 404, one that did not 401.
    manager: { ready: () => undefined },
    metrics: createMetrics(() => []),
    nodeToken: TOKEN,
    log: createLogger("silent"),
    isDraining: () => false,
    isReady: () => true,
    tls: { key: serving.key, cert: serving.cert, ca: ca.cert },
  });
  app.server.on("secureConnection", () => handshakes++);
  app.server.on("request", () => requests++);
  await app.listen({ port: 0, host: "127.0.0.1" });
  base = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await app?.close();
});

describe("gateway → node mutual TLS transport", () => {
  it("sends a node's sequential calls over one verified connection", async () => {
    const transport = new MutualTlsTransport();
    transport.use(await issue(nodeIdentity.gatewayCommonName, "client"));
    const before = handshakes;
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push(await call(transport, `${base}/replicas/ns/none/v1/completions`, NODE));
    expect(statuses).toEqual(Array(20).fill(404));
    expect(handshakes - before).toBe(1);
    transport.close();
  });

  it("refuses, before sending anything, a certificate of another node or for another address", async () => {
    const transport = new MutualTlsTransport();
    transport.use(await issue(nodeIdentity.gatewayCommonName, "client"));
    const before = requests;
    await expect(call(transport, `${base}/replicas/ns/none/v1/completions`, "another-node")).rejects.toThrow(
      /does not belong to node another-node/,
    );
    const port = (app.server.address() as AddressInfo).port;
    await expect(call(transport, `https://localhost:${port}/replicas/ns/none/v1/completions`, NODE)).rejects.toThrow(
      /localhost/,
    );
    expect(requests).toBe(before);
    // The refusals leave the right node's pool usable.
    expect(await call(transport, `${base}/replicas/ns/none/v1/completions`, NODE)).toBe(404);
    transport.close();
  });

  it("is refused by the node with a certificate the CA signed for someone else, even on a reused connection", async () => {
    const gateway = new MutualTlsTransport();
    gateway.use(await issue(nodeIdentity.gatewayCommonName, "client"));
    const other = new MutualTlsTransport();
    other.use(await issue("someone-else", "client"));
    const url = `${base}/replicas/ns/none/v1/completions`;
    expect(await call(gateway, url, NODE)).toBe(404);
    expect([await call(other, url, NODE), await call(other, url, NODE)]).toEqual([401, 401]);
    expect(await call(gateway, url, NODE)).toBe(404);
    gateway.close();
    other.close();
  });

  it("opens new connections with a new credential, and calls on them succeed", async () => {
    const transport = new MutualTlsTransport();
    transport.use(await issue(nodeIdentity.gatewayCommonName, "client"));
    const before = handshakes;
    expect(await call(transport, `${base}/replicas/ns/none/v1/completions`, NODE)).toBe(404);
    transport.use(await issue(nodeIdentity.gatewayCommonName, "client"));
    expect(await call(transport, `${base}/replicas/ns/none/v1/completions`, NODE)).toBe(404);
    expect(await call(transport, `${base}/replicas/ns/none/v1/completions`, NODE)).toBe(404);
    expect(handshakes - before).toBe(2);
    transport.close();
  });
});
