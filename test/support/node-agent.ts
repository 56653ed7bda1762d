// The real node-agent as a child process, a place for its model files, and an https server that plays a model host.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, mkdtempSync, readFileSync, statSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { inject } from "vitest";
import { freePort } from "../../controlplane/local-control-plane.ts";
import { startNode, type TestProcess } from "./processes.ts";

/** The fixture model, in the `shared/` folder beside this checkout. */
export const tinyModel = resolve(import.meta.dirname, "..", "..", "..", "shared", "models", "stories260K.gguf");
export const tinyModelSha256 = createHash("sha256").update(readFileSync(tinyModel)).digest("hex");
export const NODE_AGENT_TOKEN = "node-agent-token-for-tests";

export interface TestAgent {
  process: TestProcess;
  port: number;
  url: string;
  nodeName: string;
  cacheDir: string;
}

export async function startAgent(nodeName: string, env: Record<string, string> = {}): Promise<TestAgent> {
  const port = await freePort();
  const cacheDir = mkdtempSync(join(tmpdir(), "pomona-agent-cache-"));
  const process = startNode("node-agent/main.ts", [], {
    KUBECONFIG: inject("kubeconfig"),
    POMONA_NODE_NAME: nodeName,
    POMONA_NODE_MODE: "virtual",
    POMONA_AGENT_ADDRESS: "127.0.0.1",
    POMONA_AGENT_PORT: String(port),
    POMONA_NODE_TOKEN: NODE_AGENT_TOKEN,
    // Stand-in configs without an operator to sign certificates: plain HTTP; test/node-identity.test.ts runs TLS.
    POMONA_NODE_TLS: "off",
    POMONA_CACHE_DIR: cacheDir,
    POMONA_MODEL_MEMORY: "1Gi",
    // Two cores are shared with the control plane and other suites; one llama.cpp thread avoids spinning
    // workers that fight for a busy core and slow generation a hundredfold.
    POMONA_THREADS: "1",
    POMONA_LEASE_RENEW_SECONDS: "1",
    POMONA_LOG_LEVEL: "info",
    ...env,
  });
  await process.waitFor(/node-agent ready/, 60_000);
  return { process, port, url: `http://127.0.0.1:${port}`, nodeName, cacheDir };
}

export interface ModelHost {
  url: string;
  /** PEM of its self-signed certificate, for NODE_EXTRA_CA_CERTS. */
  caFile: string;
  /** Range headers it was asked for, in order. */
  ranges: (string | undefined)[];
  /** Resolves at the first request for `/hang`, which is never answered (a stalled host). */
  hangRequested: Promise<void>;
  close: () => Promise<void>;
}

/**
 * An https server serving the tiny model, standing in for a model host on the internet (there is none
 * here). Its certificate is self-signed by openssl, since node:crypto cannot make certificates.
 */
export async function startModelHost(): Promise<ModelHost> {
  const dir = mkdtempSync(join(tmpdir(), "pomona-model-host-"));
  const key = join(dir, "key.pem");
  const cert = join(dir, "cert.pem");
  execFileSync(
    "openssl",
    [
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", key, "-out", cert],
      ...["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
    ],
    { stdio: "ignore" },
  );
  const size = statSync(tinyModel).size;
  const ranges: (string | undefined)[] = [];
  let hangRequested!: () => void;
  const hung = new Promise<void>((resolve) => {
    hangRequested = resolve;
  });
  const server: Server = createServer({ key: readFileSync(key), cert: readFileSync(cert) }, (req, res) => {
    if (req.url === "/hang") {
      hangRequested();
      return;
    }
    ranges.push(req.headers.range);
    if (req.url !== "/models/stories260K.gguf") {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-length": size, "content-type": "application/octet-stream" });
    createReadStream(tinyModel).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    caFile: cert,
    ranges,
    hangRequested: hung,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
