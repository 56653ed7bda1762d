/**
 * Pomona as a user walks it: `npm start` (pomona up) on a fresh state dir,
 * kubectl as a user types it, the official openai client against the gateway.
 * Every component runs as its own process against a real control plane.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { get as httpsGet } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../controlplane/local-control-plane.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { eventually, repoRoot, startNode, type TestProcess } from "./support/processes.ts";

const run = promisify(execFile);
const processes: TestProcess[] = [];
let stateDir: string;
let kubeconfig: string;
let gatewayUrl: string;
let printedKey: string;
let curlLine: string;
let upSeconds: number;
let up: TestProcess;
let ports: { gateway: number; agent: number; operator: number };
let hub: Server;
let hubUrl: string;
const k = (args: string[], input?: string) => kubectlOk(args, input, kubeconfig);

/**
 * Hugging Face is outside our control and out of reach here: this stands in for it, serving the quickstart's
 * file at the path the Hub would, so the second node really downloads the model (and checks its sha256).
 */
async function startHubStandIn(): Promise<string> {
  const file = readFileSync(join(repoRoot, "..", "shared", "models", "stories260K.gguf"));
  hub = createServer((req, res) => {
    if (req.url !== "/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf") res.writeHead(404).end();
    else res.writeHead(200, { "content-length": file.length }).end(file);
  });
  await new Promise<void>((resolve) => hub.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(hub.address() as AddressInfo).port}`;
}

/** GET over TLS trusting `ca`, for a node-agent's open /metrics. */
function httpsText(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpsGet(url, { ca }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

async function keyFromSecret(): Promise<string> {
  const encoded = await k(["get", "secret", "quickstart", "-o", "jsonpath={.data.key}"]);
  return Buffer.from(encoded, "base64").toString("utf8");
}

async function readyReplicas(): Promise<{ name: string; node: string; endpoint: string }[]> {
  const list = JSON.parse(await k(["get", "modelreplicas", "-l", "pomona.dev/model=stories", "-o", "json"]));
  return list.items
    .filter((r: { status?: { phase?: string } }) => r.status?.phase === "Ready")
    .map((r: { metadata: { name: string }; spec: { nodeName: string }; status: { endpoint: string } }) => ({
      name: r.metadata.name,
      node: r.spec.nodeName,
      endpoint: r.status.endpoint,
    }));
}

describe("Pomona end to end, as a user", () => {
  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), "pomona-e2e-"));
    hubUrl = await startHubStandIn();
    const [gatewayPort, agentPort, operatorPort] = [await freePort(), await freePort(), await freePort()];
    ports = { gateway: gatewayPort, agent: agentPort, operator: operatorPort };
    const started = Date.now();
    // `npm start` is `node cli/pomona.ts up`; no KUBECONFIG, so it starts its own control plane as on a fresh machine.
    up = startNode(
      "cli/pomona.ts",
      [
        "up",
        "--state-dir",
        stateDir,
        "--gateway-port",
        `${gatewayPort}`,
        "--agent-port",
        `${agentPort}`,
        "--operator-port",
        `${operatorPort}`,
      ],
      // A node is lost 4 s after its last renewal (Lease of 4 × 1 s) plus 5 s of grace, so the drill below is
      // quick; one llama.cpp thread per agent, since two agents share this machine's cores; the Hub stand-in.
      {
        KUBECONFIG: undefined,
        POMONA_NODE_LOST_AFTER_SECONDS: "5",
        POMONA_LEASE_RENEW_SECONDS: "1",
        POMONA_THREADS: "1",
        POMONA_HF_ENDPOINT: hubUrl,
      },
    );
    processes.push(up);
    await up.waitFor(/Press Ctrl-C to stop/, 300_000);
    upSeconds = (Date.now() - started) / 1000;
    kubeconfig = (await up.waitFor(/export KUBECONFIG=(\S+)/))[1] ?? "";
    printedKey = (await up.waitFor(/API key \(also in Secret [^)]*\): (sk-pomona-\S+)/))[1] ?? "";
    curlLine = (await up.waitFor(/^\s+(curl .+)$/m))[1] ?? "";
    gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
    console.log(`pomona up: endpoint and key printed after ${upSeconds.toFixed(1)} s`);
  });

  afterAll(async () => {
    for (const p of processes.reverse()) await p.stop("SIGINT");
    hub?.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  it("keeps the README's quick start to the commands this suite runs", () => {
    const readme = readFileSync(join(repoRoot, "README.md"), "utf8");
    const block = readme.match(/## Quick start[\s\S]*?```sh\n([\s\S]*?)```/)?.[1] ?? "";
    expect(
      block
        .split("\n")
        .map((l) => l.split("#")[0]?.trim())
        .filter(Boolean),
    ).toEqual(["npm ci", "npm start", "npm test"]);
    const scripts = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")).scripts;
    expect(scripts.start).toBe("node cli/pomona.ts up");
  });

  it("answers the curl line it prints, pasted as is", async () => {
    const { stdout } = await run("bash", ["-c", curlLine]);
    const body = JSON.parse(stdout);
    expect(body.object).toBe("chat.completion");
    expect(body.choices[0].message.content.length).toBeGreaterThan(0);
    expect(body.usage.completion_tokens).toBeGreaterThan(0);
  });

  it("accepts kubectl apply -f examples/ and reports the model Ready to kubectl wait", async () => {
    const applied = await k(["apply", "-f", join(repoRoot, "examples")]);
    expect(applied).toContain("inferencemodel.pomona.dev/stories");
    const waited = await k(["wait", "--for=condition=Ready", "inferencemodel/stories", "--timeout=120s"]);
    expect(waited).toContain("condition met");
    // The CRDs pomona up installed carry their defaults and CEL rules.
    expect(await k(["get", "inferencemodel/stories", "-o", "jsonpath={.spec.rollout.maxSurge}"])).toBe("1");
    const twoSources = await kubectl(
      ["apply", "-f", "-"],
      "apiVersion: pomona.dev/v1alpha1\nkind: InferenceModel\nmetadata: {name: two-sources}\nspec:\n  source: {url: https://example.com/a.gguf, path: /a.gguf}\n",
      kubeconfig,
    );
    expect(twoSources.stderr).toContain("exactly one of hf, url or path must be set");
  });

  it("serves chat, a stream and an embedding to the official openai client with the key from its Secret", async () => {
    const key = await keyFromSecret();
    expect(key).toBe(printedKey);
    const client = new OpenAI({ apiKey: key, baseURL: `${gatewayUrl}/v1` });

    const chat = await client.chat.completions.create({
      model: "stories",
      messages: [{ role: "user", content: "Once upon a time" }],
      max_tokens: 24,
    });
    expect(chat.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(chat.usage?.total_tokens).toBeGreaterThan(0);

    const stream = await client.chat.completions.create({
      model: "quickstart",
      messages: [{ role: "user", content: "Tell me about a cat" }],
      max_tokens: 24,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage = chunk.usage ?? usage;
    }
    expect(text.length).toBeGreaterThan(0);
    expect(usage?.completion_tokens).toBeGreaterThan(0);

    const embedding = await client.embeddings.create({ model: "stories", input: "a little girl named Lily" });
    expect(embedding.data[0]?.embedding.length).toBeGreaterThan(0);
  });

  let secondAgent: TestProcess;
  it("scales to two replicas on two virtual nodes, and both serve", { timeout: 180_000 }, async () => {
    const token = Buffer.from(
      await k(["get", "secret", "-n", "pomona-system", "pomona-node-token", "-o", "jsonpath={.data.token}"]),
      "base64",
    ).toString("utf8");
    secondAgent = startNode("node-agent/main.ts", [], {
      KUBECONFIG: kubeconfig,
      POMONA_NAMESPACE: "pomona-system",
      POMONA_NODE_NAME: "second-node",
      POMONA_NODE_MODE: "virtual",
      POMONA_AGENT_PORT: `${await freePort()}`,
      POMONA_NODE_TOKEN: token,
      POMONA_CACHE_DIR: join(stateDir, "second-node-cache"),
      POMONA_HF_ENDPOINT: hubUrl,
      POMONA_LEASE_RENEW_SECONDS: "1",
      POMONA_THREADS: "1",
    });
    processes.push(secondAgent);
    await eventually("the second node", async () =>
      (await kubectl(["get", "node", "second-node"], "", kubeconfig)).code === 0 ? true : undefined,
    );

    await k(["scale", "inferencemodel/stories", "--replicas=2"]);
    const replicas = await eventually(
      "two ready replicas",
      async () => {
        const ready = await readyReplicas();
        return ready.length === 2 ? ready : undefined;
      },
      120_000,
    );
    expect(new Set(replicas.map((r) => r.node)).size).toBe(2);

    const client = new OpenAI({ apiKey: await keyFromSecret(), baseURL: `${gatewayUrl}/v1`, maxRetries: 0 });
    // Each node-agent counts what it generated; it serves over TLS with a certificate of the node CA.
    const ca = Buffer.from(
      await k([
        "get",
        "secret",
        "-n",
        "pomona-system",
        "pomona-gateway-node-client",
        "-o",
        "jsonpath={.data.ca\\.crt}",
      ]),
      "base64",
    ).toString("utf8");
    const generatedOn = async (endpoint: string) => {
      const metrics = await httpsText(`${new URL(endpoint).origin}/metrics`, ca);
      return [...metrics.matchAll(/^pomona_node_\w*tokens\w*_total\{[^}]*\}\s+(\d+)/gm)].reduce(
        (n, m) => n + Number(m[1]),
        0,
      );
    };
    const before = await Promise.all(replicas.map((r) => generatedOn(r.endpoint)));
    // The gateway learns of the second endpoint from the next config snapshot, a
    // moment after the replica turns Ready; until then the first serves all.
    // Every request must be answered, and within the deadline both nodes serve.
    const deadline = Date.now() + 30_000;
    let bothServed = false;
    while (!bothServed && Date.now() < deadline) {
      const answered = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          client.chat.completions.create({
            model: "stories",
            messages: [{ role: "user", content: `Story ${i}` }],
            max_tokens: 8,
          }),
        ),
      );
      expect(answered.every((a) => (a.choices[0]?.message.content ?? "").length > 0)).toBe(true);
      const after = await Promise.all(replicas.map((r) => generatedOn(r.endpoint)));
      bothServed = after.every((n, i) => n > before[i]!);
    }
    expect(bothServed, "both nodes generated tokens through the gateway").toBe(true);
  });

  it("shows both replicas, both nodes and closed breakers in pomona status, and the key in pomona keys list", async () => {
    const cli = (args: string[]) =>
      run(process.execPath, [join(repoRoot, "cli/pomona.ts"), ...args, "--state-dir", stateDir], {
        env: { ...process.env, KUBECONFIG: kubeconfig },
      });
    const { stdout: status } = await cli(["status"]);
    expect(status).toMatch(/^stories\s+2\/2\s+quickstart/m);
    expect(status.match(/^stories-\S+\s+stories\s+\S+\s+Ready/gm)).toHaveLength(2);
    expect(status).toMatch(/^second-node\s+cpu/m);
    expect(status.match(/^https:\/\/\S+\s+closed/gm)?.length).toBeGreaterThanOrEqual(2);
    const { stdout: keys } = await cli(["keys", "list"]);
    expect(keys).toMatch(/^quickstart\s+/m);
    expect(keys).not.toContain(await keyFromSecret());
  });

  it("keeps serving when a node-agent dies, and reschedules its replica", { timeout: 180_000 }, async () => {
    await secondAgent.stop("SIGKILL");
    const client = new OpenAI({ apiKey: await keyFromSecret(), baseURL: `${gatewayUrl}/v1`, maxRetries: 0 });
    for (let round = 0; round < 5; round++) {
      const results = await Promise.allSettled(
        Array.from({ length: 6 }, () =>
          client.chat.completions.create({
            model: "stories",
            messages: [{ role: "user", content: "Hi" }],
            max_tokens: 8,
          }),
        ),
      );
      expect(results.filter((r) => r.status === "rejected")).toEqual([]);
    }
    const replicas = await eventually(
      "the lost replica replaced",
      async () => {
        const ready = await readyReplicas();
        return ready.length === 2 && ready.every((r) => r.node !== "second-node") ? ready : undefined;
      },
      120_000,
    );
    expect(replicas).toHaveLength(2);
  });

  it("refuses a revoked key within a second", async () => {
    const key = await keyFromSecret();
    const client = new OpenAI({ apiKey: key, baseURL: `${gatewayUrl}/v1`, maxRetries: 0 });
    await client.models.list();
    await startNode("cli/pomona.ts", ["keys", "revoke", "quickstart"], { KUBECONFIG: kubeconfig }).waitFor(/revoked/);
    const revokedAt = Date.now();
    await eventually(
      "the gateway to refuse the key",
      async () => {
        try {
          await client.models.list();
          return undefined;
        } catch (error) {
          return error instanceof OpenAI.AuthenticationError ? true : undefined;
        }
      },
      5_000,
    );
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
  });

  it("leaves nothing behind after kubectl delete -f examples/", async () => {
    await k(["delete", "--ignore-not-found", "-f", join(repoRoot, "examples")]);
    await eventually("every Pomona object and key Secret gone", async () => {
      const left = (await k(["get", "pomona,secrets", "-o", "name"])).trim();
      return left === "" ? true : undefined;
    });
    const replicas = (await k(["get", "modelreplicas", "-o", "name"])).trim();
    expect(replicas).toBe("");
  });

  it("stops every process it started on Ctrl-C", async () => {
    expect(await k(["get", "--raw", "/healthz"])).toBe("ok");
    await up.stop("SIGINT");
    expect(up.output()).toContain("stopping");
    expect(up.child.exitCode).toBe(0);
    const answers = async (url: string) =>
      fetch(url, { signal: AbortSignal.timeout(2_000) }).then(
        () => true,
        () => false,
      );
    // The operator, the node-agent, the gateway and the control plane all went with it.
    for (const port of Object.values(ports)) expect(await answers(`http://127.0.0.1:${port}/healthz`)).toBe(false);
    expect((await kubectl(["get", "--raw", "/healthz", "--request-timeout=2s"], "", kubeconfig)).code).not.toBe(0);
  });

  it("starts again on its state dir with the objects kept, and serves as soon as it says so", {
    timeout: 180_000,
  }, async () => {
    const upAgain = async () => {
      const started = Math.floor(Date.now() / 1000) * 1000;
      const again = startNode(
        "cli/pomona.ts",
        [
          "up",
          "--state-dir",
          stateDir,
          "--gateway-port",
          `${ports.gateway}`,
          "--agent-port",
          `${ports.agent}`,
          "--operator-port",
          `${ports.operator}`,
        ],
        { KUBECONFIG: undefined, POMONA_LEASE_RENEW_SECONDS: "1", POMONA_THREADS: "1" },
      );
      processes.push(again);
      await again.waitFor(/Press Ctrl-C to stop/, 120_000);
      const key = (await again.waitFor(/API key \(also in Secret [^)]*\): (sk-pomona-\S+)/))[1] ?? "";
      return { again, key, started };
    };
    // The first start after the deletion above applies the quickstart again; the second finds it all in
    // place, with statuses that still say Ready from the run before while the node-agent loads anew.
    const first = await upAgain();
    await first.again.stop("SIGINT");
    const second = await upAgain();
    expect(second.key).toBe(first.key);
    // It said so only once this run's node-agent had loaded the model, not on the last run's status.
    const readySince = await k([
      "get",
      "modelreplicas",
      "-l",
      "pomona.dev/model=stories",
      "-o",
      'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].lastTransitionTime}',
    ]);
    expect(readySince.split(" ").some((t) => Date.parse(t) >= second.started)).toBe(true);
    const client = new OpenAI({ apiKey: second.key, baseURL: `${gatewayUrl}/v1`, maxRetries: 0 });
    const chat = await client.chat.completions.create({
      model: "quickstart",
      messages: [{ role: "user", content: "Once upon a time" }],
      max_tokens: 8,
    });
    expect(chat.choices[0]?.message.content?.length).toBeGreaterThan(0);
    await second.again.stop("SIGINT");
    expect(second.again.child.exitCode).toBe(0);
  });
});
