// Model sources go through one guarded fetcher: an allowed origin cannot redirect a download (or the
// operator's GGUF header read) to a loopback, private or link-local address, hosts allowed by name must
// resolve to public addresses, sizes are capped, and a signed URL's query string never reaches status,
// Events or messages. The servers here stand in for model hosts on the internet (there are none here).
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modelSourcePolicy } from "../model-source/policy.ts";
import { ModelCache } from "../node-agent/model-cache.ts";
import type { ReplicaFailure } from "../node-agent/replica-failure.ts";
import { createNamespaces, startOperator, type TestOperator } from "./operator-support.ts";
import { installCrds } from "./support/crds.ts";
import { kubectlOk } from "./support/kubectl.ts";
import { startAgent, type TestAgent, tinyModel, tinyModelSha256 } from "./support/node-agent.ts";
import { eventually } from "./support/processes.ts";

const SECRET = "s3cret-signature-value";
const modelBytes = readFileSync(tinyModel);

/** Records every request it gets: a redirect target that must never be contacted. */
let target: Server;
let targetPort = 0;
const targetRequests: string[] = [];
/** The allowed origin (an administrator listed it), which redirects to places nobody allowed. */
let origin: Server;
let originUrl = "";

const listen = async (server: Server) => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
};

beforeAll(async () => {
  target = createServer((req, res) => {
    targetRequests.push(req.url ?? "");
    res.writeHead(200, { "content-length": modelBytes.length }).end(modelBytes);
  });
  targetPort = await listen(target);
  const redirects: Record<string, string> = {
    "/to-loopback.gguf": `http://127.0.0.1:${targetPort}/stolen.gguf?X-Amz-Signature=${SECRET}`,
    "/to-localhost.gguf": `https://localhost:${targetPort}/stolen.gguf?sig=${SECRET}`,
    "/to-metadata.gguf": "http://169.254.169.254/latest/meta-data/",
    "/to-ipv6-loopback.gguf": `https://[::1]:${targetPort}/stolen.gguf`,
    "/to-unlisted.gguf": "https://models.example.net/x.gguf",
    "/loop.gguf": "/loop.gguf",
    // The Hub's file path (hf:owner/repo/model.gguf) redirecting to a signed CDN URL on a loopback address.
    "/owner/repo/resolve/main/model.gguf": `http://127.0.0.1:${targetPort}/cdn/model.gguf?X-Amz-Signature=${SECRET}`,
  };
  origin = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0]!;
    const to = redirects[path];
    if (to) return void res.writeHead(302, { location: to }).end();
    if (path === "/ok.gguf") return void res.writeHead(200, { "content-length": modelBytes.length }).end(modelBytes);
    if (path === "/same-origin.gguf") return void res.writeHead(302, { location: "/ok.gguf" }).end();
    res.writeHead(404).end();
  });
  originUrl = `http://127.0.0.1:${await listen(origin)}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => origin?.close(() => resolve()));
  await new Promise<void>((resolve) => target?.close(() => resolve()));
});

describe("the guarded fetcher, through the node-agent's model cache", () => {
  // The test server is allowed as an origin, exactly as an administrator would list a mirror; `localhost` is
  // listed as a host name, which is allowed only while it resolves to public addresses (it does not).
  const cache = (maxBytes?: number) =>
    new ModelCache(
      mkdtempSync(join(tmpdir(), "pomona-sources-")),
      undefined,
      undefined,
      modelSourcePolicy({ allowedHosts: `${originUrl}, localhost`, hfEndpoint: "https://huggingface.co", maxBytes }),
    );
  const refusal = async (path: string, maxBytes?: number) => {
    const c = cache(maxBytes);
    await c.init();
    return (await c.fetch({ url: `${originUrl}${path}?token=${SECRET}` }).catch((e: unknown) => e)) as ReplicaFailure;
  };

  it("downloads from the allowed origin, and follows a redirect within it", async () => {
    const c = cache();
    await c.init();
    expect((await c.fetch({ url: `${originUrl}/ok.gguf`, sha256: tinyModelSha256 })).sha256).toBe(tinyModelSha256);
    const again = cache();
    await again.init();
    expect((await again.fetch({ url: `${originUrl}/same-origin.gguf` })).path).toMatch(/\.gguf$/);
  });

  it("refuses a redirect to 127.0.0.1, to a name that resolves to loopback, to [::1] and to link-local metadata", async () => {
    const cases: [string, RegExp][] = [
      ["/to-loopback.gguf", /127\.0\.0\.1 is a loopback address/],
      ["/to-localhost.gguf", /localhost resolves to (127\.0\.0\.1|::1), a loopback address/],
      ["/to-ipv6-loopback.gguf", /::1 is a loopback address/],
      ["/to-metadata.gguf", /169\.254\.169\.254 is a link-local address/],
      ["/to-unlisted.gguf", /models\.example\.net is not among the allowed model hosts/],
    ];
    for (const [path, message] of cases) {
      const failure = await refusal(path);
      expect(failure.reason, path).toBe("SourceNotAllowed");
      expect(failure.message, path).toMatch(message);
      expect(failure.message, path).toContain(`a redirect from ${originUrl}${path}`);
      expect(failure.message, path).not.toContain(SECRET);
    }
    expect(targetRequests).toEqual([]);
  });

  it("gives up on a redirect loop, and refuses a file over the size limit", async () => {
    expect((await refusal("/loop.gguf")).message).toMatch(/redirected more than 5 times/);
    const big = await refusal("/ok.gguf", 1024);
    expect(big.reason).toBe("FileTooLarge");
    expect(big.message).not.toContain(SECRET);
  });

  it("refuses plain http and unlisted hosts without an allowed origin", async () => {
    const c = new ModelCache(mkdtempSync(join(tmpdir(), "pomona-sources-")), undefined);
    await c.init();
    const failure = (await c.fetch({ url: `${originUrl}/ok.gguf` }).catch((e: unknown) => e)) as ReplicaFailure;
    expect(failure.reason).toBe("SourceNotAllowed");
    expect(targetRequests).toEqual([]);
  });
});

describe("a model whose Hub file redirects to 127.0.0.1, with the real operator and node-agent", () => {
  const ns = "model-sources";
  const system = "model-sources-system";
  let operator: TestOperator;
  let agent: TestAgent;

  beforeAll(async () => {
    await installCrds();
    await createNamespaces(ns, system);
    // The Hub stand-in is the HF endpoint of both, so it is an allowed origin; its redirect is not.
    operator = await startOperator(system, { POMONA_HF_ENDPOINT: originUrl });
    agent = await startAgent("sources-node", { POMONA_HF_ENDPOINT: originUrl });
  }, 180_000);

  afterAll(async () => {
    await agent?.process.stop();
    await operator?.process.stop();
    await kubectlOk(["delete", "namespace", ns, "--wait=false"]).catch(() => {});
  });

  const apply = (name: string, memory?: string) =>
    kubectlOk(
      ["apply", "-n", ns, "-f", "-"],
      JSON.stringify({
        apiVersion: "pomona.dev/v1alpha1",
        kind: "InferenceModel",
        metadata: { name },
        spec: {
          source: { hf: "hf:owner/repo/model.gguf" },
          engine: { contextSize: 256, parallelSequences: 1 },
          replicas: 1,
          ...(memory ? { memory } : {}),
        },
      }),
    );
  const getJson = async (what: string) => JSON.parse(await kubectlOk(["get", what, "-n", ns, "-o", "json"]));
  type Condition = { type: string; status: string; reason: string; message: string };

  it("the operator refuses to read its header: Scheduled=False, reason SourceNotAllowed, an Event, no query string", {
    timeout: 120_000,
  }, async () => {
    await apply("header-read");
    const scheduled = await eventually("the Scheduled condition", async () => {
      const m = await getJson("inferencemodel/header-read");
      return (m.status?.conditions as Condition[] | undefined)?.find(
        (c) => c.type === "Scheduled" && c.reason === "SourceNotAllowed",
      );
    });
    expect(scheduled.status).toBe("False");
    expect(scheduled.message).toMatch(
      /http:\/\/127\.0\.0\.1:\d+\/cdn\/model\.gguf .*is refused: 127\.0\.0\.1 is a loopback address/,
    );
    await eventually("the SourceNotAllowed Event", async () =>
      (await kubectlOk(["get", "events", "-n", ns, "-o", "json"])).includes('"reason": "SourceNotAllowed"')
        ? true
        : undefined,
    );
  });

  it("the node-agent refuses to download it: the replica Fails with SourceNotAllowed, no query string", {
    timeout: 180_000,
  }, async () => {
    await apply("download", "64Mi");
    // The operator replaces a Failed replica and reports why, on the model and in an Event.
    const degraded = await eventually(
      "the model to report its failed replica",
      async () => {
        const m = await getJson("inferencemodel/download");
        return (m.status?.conditions as Condition[] | undefined)?.find(
          (c) => c.reason === "ReplicaFailed" && c.message.includes("refused"),
        );
      },
      150_000,
    );
    expect(degraded.message).toMatch(/127\.0\.0\.1 is a loopback address/);
    const events = await kubectlOk(["get", "events", "-n", ns, "-o", "json"]);
    expect(events).toContain("ReplicaFailed");
    expect(agent.process.output()).toContain("SourceNotAllowed");
  });

  it("no status, Event or log line holds the signed URL's query string, and the redirect target was never contacted", async () => {
    const everything = [
      await kubectlOk(["get", "inferencemodels,modelreplicas", "-n", ns, "-o", "json"]),
      await kubectlOk(["get", "events", "-n", ns, "-o", "json"]),
      agent.process.output(),
      operator.process.output(),
    ].join("\n");
    expect(everything).toContain("cdn/model.gguf");
    expect(everything).not.toContain(SECRET);
    expect(everything).not.toContain("X-Amz-Signature");
    expect(targetRequests).toEqual([]);
  });
});
