// Node identity end to end, with the real operator, node-agent (real llama.cpp) and gateway processes in
// their default mode (mutual TLS): the operator signs the node's certificate for its registered address,
// the gateway reaches the node only over TLS with its own operator-minted client certificate, a fake
// node gets neither the token nor the prompt, a node refuses callers without the gateway's certificate,
// a request for an address the node has not registered is denied, and certificates rotate under traffic.
import { once } from "node:events";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { createServer, type TLSSocket } from "node:tls";
import {
  CertificatesV1Api,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
} from "@kubernetes/client-node";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GROUP, type ModelReplica, nodeIdentity, VERSION } from "../crds/api/index.ts";
import {
  createCertificateAuthority,
  createCertificateRequest,
  generateKeyPair,
  privateKeyPem,
  signCertificate,
} from "../pki/x509.ts";
import { createNamespaces, kubeConfig, startOperator, type TestOperator } from "./operator-support.ts";
import { installCrds } from "./support/crds.ts";
import { type GatewayProcess, startGatewayProcess } from "./support/gateway-process.ts";
import { kubectlOk } from "./support/kubectl.ts";
import { NODE_AGENT_TOKEN, startAgent, type TestAgent, tinyModel } from "./support/node-agent.ts";
import { eventually } from "./support/processes.ts";

const system = "identity-system";
const ns = "identity";
const nodeName = "identity-node";
const PROMPT = "a prompt only the real node may read";
let operator: TestOperator;
let agent: TestAgent;
let gateway: GatewayProcess;
let client: OpenAI;

const core = () => kubeConfig().makeApiClient(CoreV1Api);
const replicaRef = { group: GROUP, version: VERSION, namespace: ns, plural: "modelreplicas" };

async function readyReplica(): Promise<ModelReplica> {
  return eventually("a Ready replica with an endpoint", async () => {
    const list = (await kubeConfig().makeApiClient(CustomObjectsApi).listNamespacedCustomObject(replicaRef)) as {
      items: ModelReplica[];
    };
    return list.items.find((r) => r.status?.phase === "Ready" && r.status.endpoint);
  });
}

beforeAll(async () => {
  await installCrds();
  await createNamespaces(system, ns);
  // Short certificates, so a rotation of both the node's and the gateway's happens within the test.
  operator = await startOperator(system, { POMONA_NODE_CERT_LIFETIME_SECONDS: "30" });
  agent = await startAgent(nodeName, { POMONA_NODE_TLS: "mutual" });
  gateway = await startGatewayProcess(system, { POMONA_NODE_TLS: "mutual", POMONA_NODE_TOKEN: NODE_AGENT_TOKEN });
  await kubectlOk(
    ["apply", "-n", ns, "-f", "-"],
    `apiVersion: pomona.dev/v1alpha1
kind: InferenceModel
metadata: { name: stories }
spec:
  source: { path: ${tinyModel} }
  engine: { contextSize: 1024, parallelSequences: 2 }
  memory: 64Mi
---
apiVersion: pomona.dev/v1alpha1
kind: ApiKey
metadata: { name: caller }
spec: { owner: tests }
`,
  );
  const key = await eventually("the minted key", async () => {
    const secret = await core()
      .readNamespacedSecret({ name: "caller", namespace: ns })
      .catch(() => undefined);
    return secret?.data?.key ? Buffer.from(secret.data.key, "base64").toString("utf8") : undefined;
  });
  client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: key, maxRetries: 0 });
  await readyReplica();
  await eventually("an answer through the gateway", () =>
    client.chat.completions
      .create({ model: "stories", messages: [{ role: "user", content: "Once" }], max_tokens: 4 })
      .catch(() => undefined),
  );
}, 300_000);

afterAll(async () => {
  await gateway?.process.stop();
  await agent?.process.stop();
  await operator?.process.stop();
});

describe("node identity", () => {
  it("serves through TLS to a node whose certificate the operator signed for its registered address", async () => {
    const replica = await readyReplica();
    expect(replica.status?.endpoint).toMatch(/^https:\/\/127\.0\.0\.1:\d+\//);
    const node = await core().readNode({ name: nodeName });
    expect(node.status?.addresses).toContainEqual({ type: "InternalIP", address: "127.0.0.1" });
    const chat = await client.chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: "Once upon a time" }],
      max_tokens: 8,
    });
    expect(chat.choices[0]?.message.content?.length).toBeGreaterThan(0);
  });

  it("refuses a caller without the gateway's client certificate, even with the node token", async () => {
    const replica = await readyReplica();
    const secret = await core().readNamespacedSecret({ name: nodeIdentity.gatewayClientSecret, namespace: system });
    const ca = Buffer.from(secret.data!["ca.crt"]!, "base64").toString("utf8");
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpsRequest(
        `${replica.status!.endpoint}/v1/chat/completions`,
        {
          method: "POST",
          ca,
          servername: nodeName,
          headers: { authorization: `Bearer ${NODE_AGENT_TOKEN}`, "content-type": "application/json" },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify({ model: "stories", messages: [{ role: "user", content: PROMPT }] }));
    });
    expect(status).toBe(401);
  });

  it("sends neither the node token nor the prompt to an endpoint that is not the node's", async () => {
    // A fake node: TLS with a certificate that claims the node's name and address but comes from another CA.
    const fakeCa = await createCertificateAuthority("not-the-node-ca", 3_600_000);
    const keys = await generateKeyPair();
    const cert = await signCertificate({
      ca: fakeCa,
      commonName: nodeIdentity.nodeCommonName(nodeName),
      altNames: [
        { type: "ip", value: "127.0.0.1" },
        { type: "dns", value: nodeName },
      ],
      publicKey: keys,
      usage: "server",
      lifetimeMs: 3_600_000,
    });
    let received = "";
    let handshakes = 0;
    const fake = createServer({ key: await privateKeyPem(keys), cert }, (socket: TLSSocket) => {
      socket.on("data", (d) => {
        received += d.toString("latin1");
      });
    });
    fake.on("secureConnection", () => handshakes++);
    const attempts: number[] = [];
    fake.on("connection", () => attempts.push(Date.now()));
    fake.listen(0, "127.0.0.1");
    await once(fake, "listening");
    const port = (fake.address() as AddressInfo).port;

    // Whoever may write a replica's status points its endpoint at the fake node.
    const custom = kubeConfig().makeApiClient(CustomObjectsApi);
    const replica = await readyReplica();
    const real = replica.status!.endpoint!;
    const forged = real.replace(/:\d+\//, `:${port}/`);
    const patchEndpoint = (endpoint: string) =>
      custom.patchNamespacedCustomObjectStatus(
        { ...replicaRef, name: replica.metadata!.name!, body: { status: { endpoint } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    await patchEndpoint(forged);
    try {
      // Requests go on until the gateway has tried the fake endpoint; none of them may succeed there.
      await eventually("the gateway tries the fake node", async () => {
        await client.chat.completions
          .create({ model: "stories", messages: [{ role: "user", content: PROMPT }], max_tokens: 2 })
          .catch(() => undefined);
        return attempts.length > 0 ? true : undefined;
      });
      expect(handshakes).toBe(0);
      expect(received).not.toContain(NODE_AGENT_TOKEN);
      expect(received).not.toContain(PROMPT);
    } finally {
      await patchEndpoint(real);
      fake.close();
      await eventually("served by the real node again", () =>
        client.chat.completions
          .create({ model: "stories", messages: [{ role: "user", content: "Once" }], max_tokens: 2 })
          .catch(() => undefined),
      );
    }
  });

  it("denies a certificate request for an address the node has not registered", async () => {
    const keys = await generateKeyPair();
    const request = await createCertificateRequest(keys, nodeIdentity.nodeCommonName(nodeName), [
      { type: "ip", value: "10.99.99.99" },
    ]);
    const api = kubeConfig().makeApiClient(CertificatesV1Api);
    const name = `forged-${Date.now()}`;
    await api.createCertificateSigningRequest({
      body: {
        metadata: { name, labels: { [nodeIdentity.nodeLabel]: nodeName } },
        spec: {
          signerName: nodeIdentity.signerName,
          request: Buffer.from(request).toString("base64"),
          usages: ["digital signature", "server auth"],
        },
      },
    });
    const denied = await eventually("the operator's decision", async () => {
      const csr = await api.readCertificateSigningRequest({ name });
      return csr.status?.conditions?.find((c) => c.type === "Denied" || c.type === "Approved");
    });
    expect(denied.type).toBe("Denied");
    expect(denied.reason).toBe("AddressNotRegistered");
    const csr = await api.readCertificateSigningRequest({ name });
    expect(csr.status?.certificate).toBeUndefined();
    await api.deleteCertificateSigningRequest({ name });
  });

  it("rotates the node's and the gateway's certificates without failing a request", { timeout: 180_000 }, async () => {
    const renewed = (text: string, pattern: RegExp) => (text.match(pattern) ?? []).length;
    const nodeBefore = renewed(agent.process.output(), /serving certificate renewed/g);
    const gatewayBefore = renewed(gateway.process.output(), /node client certificate in use/g);
    const failures: string[] = [];
    let answered = 0;
    // One request after another until both sides have moved to a new certificate (30 s lifetime: renewed at 20 s).
    await eventually(
      "both certificates renewed under traffic",
      async () => {
        try {
          await client.chat.completions.create({
            model: "stories",
            messages: [{ role: "user", content: "Once" }],
            max_tokens: 2,
          });
          answered++;
        } catch (err) {
          failures.push(String(err));
        }
        const node = renewed(agent.process.output(), /serving certificate renewed/g) > nodeBefore;
        const gw = renewed(gateway.process.output(), /node client certificate in use/g) > gatewayBefore;
        return node && gw ? true : undefined;
      },
      120_000,
    );
    // And after the rotation, still served.
    await client.chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: "Once" }],
      max_tokens: 2,
    });
    expect(failures).toEqual([]);
    expect(answered).toBeGreaterThan(0);
  });
});
