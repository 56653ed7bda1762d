/**
 * A real Kubernetes control plane on loopback — etcd, kube-apiserver and a
 * kube-controller-manager that runs only garbage collection, namespace
 * deletion and service accounts — in the manner of controller-runtime's envtest.
 * Tests use it with a fresh temp dir; `pomona up` keeps it in a state dir so
 * objects survive a restart.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { stringify } from "yaml";
import { type ControlPlaneBinaries, ensureBinaries } from "./binaries.ts";

export interface ControlPlaneOptions {
  /** Where data, certificates, logs and the kubeconfig live. */
  dir: string;
  /** Fixed ports keep a kubeconfig valid across restarts of a kept control plane; tests leave them random. */
  etcdPort?: number;
  apiserverPort?: number;
  log?: (line: string) => void;
}

export interface RunningControlPlane {
  kubeconfigPath: string;
  server: string;
  /** The admin bearer token; the kubeconfig holds it too. */
  token: string;
  binaries: ControlPlaneBinaries;
  /** The kube-apiserver's version, e.g. v1.36.3. */
  version: string;
  stop(): Promise<void>;
  /** Stop and start kube-apiserver alone, keeping etcd and its data. */
  restartApiserver(): Promise<void>;
}

/**
 * A free TCP port on loopback for a process started later to bind. It is picked below the kernel's ephemeral
 * range: a port from that range (what `listen(0)` hands out) can be taken by any outgoing connection — the API
 * server's to etcd, say — in the seconds before the process binds it, and the process then fails with
 * EADDRINUSE. Below the range only another listener can take it, and random picks make that unlikely.
 */
export async function freePort(): Promise<number> {
  const [low, high] = portsBelowEphemeralRange();
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port in ${low}-${high} after 50 tries`);
}

/** [low, high): ports no outgoing connection is given, from /proc on Linux; the IANA default elsewhere. */
function portsBelowEphemeralRange(): [number, number] {
  const low = 10_000;
  try {
    const ephemeralLow = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0]);
    if (ephemeralLow > low + 1_000) return [low, ephemeralLow];
  } catch {
    // Not Linux: macOS and the BSDs hand out 49152-65535.
  }
  return [low, 49_152];
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

function secretOnce(path: string, make: () => string): string {
  if (!existsSync(path)) writeFileSync(path, make(), { mode: 0o600 });
  return readFileSync(path, "utf8");
}

function start(name: string, command: string, args: string[], logDir: string): ChildProcess {
  const log = createWriteStream(join(logDir, `${name}.log`), { flags: "a" });
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return child;
}

async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

async function waitFor(
  what: string,
  child: ChildProcess,
  logFile: string,
  probe: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      const tail = readFileSync(logFile, "utf8").split("\n").slice(-20).join("\n");
      throw new Error(`${what} exited with code ${child.exitCode}:\n${tail}`);
    }
    if (await probe().catch(() => false)) return;
    await sleep(200);
  }
  throw new Error(`${what} did not become ready within 120 s; see ${logFile}`);
}

export async function startControlPlane(options: ControlPlaneOptions): Promise<RunningControlPlane> {
  const log = options.log ?? (() => {});
  const binaries = ensureBinaries(log);
  const { dir } = options;
  const certDir = join(dir, "pki");
  const logDir = join(dir, "logs");
  for (const d of [dir, certDir, logDir]) mkdirSync(d, { recursive: true });

  const token = secretOnce(join(certDir, "admin-token"), () => randomBytes(32).toString("hex"));
  writeFileSync(join(certDir, "tokens.csv"), `${token},admin,admin,"system:masters"\n`, { mode: 0o600 });
  const saKeyPath = join(certDir, "service-account.key");
  secretOnce(saKeyPath, () =>
    generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
  );

  const etcdPort = options.etcdPort ?? (await freePort());
  const etcdPeerPort = await freePort();
  const apiserverPort = options.apiserverPort ?? (await freePort());
  const server = `https://127.0.0.1:${apiserverPort}`;

  const etcdUrl = `http://127.0.0.1:${etcdPort}`;
  const etcd = start(
    "etcd",
    binaries.etcd,
    [
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
      // Tests and a laptop control plane trade crash durability for speed, as envtest does.
      "--unsafe-no-fsync",
      "--log-level=warn",
    ],
    logDir,
  );
  await waitFor("etcd", etcd, join(logDir, "etcd.log"), async () => (await fetch(`${etcdUrl}/health`)).ok);

  let apiserver: ChildProcess | undefined;
  const startApiserver = async () => {
    apiserver = start(
      "kube-apiserver",
      binaries.kubeApiserver,
      [
        `--etcd-servers=${etcdUrl}`,
        `--cert-dir=${certDir}`,
        "--bind-address=127.0.0.1",
        `--secure-port=${apiserverPort}`,
        "--advertise-address=127.0.0.1",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=RBAC",
        `--token-auth-file=${join(certDir, "tokens.csv")}`,
        "--service-account-issuer=https://kubernetes.default.svc",
        `--service-account-key-file=${saKeyPath}`,
        `--service-account-signing-key-file=${saKeyPath}`,
        // No kubelet runs Pods here, so the admission plugin that needs a default ServiceAccount stays off, as in envtest.
        "--disable-admission-plugins=ServiceAccount",
        "--allow-privileged=true",
      ],
      logDir,
    );
    await waitFor("kube-apiserver", apiserver, join(logDir, "kube-apiserver.log"), async () => {
      return (await getUnverified(`${server}/readyz`, token)).status === 200;
    });
  };
  await startApiserver();

  // kube-apiserver writes a self-signed CA after the serving certificate; trusting that CA keeps TLS verified.
  const servingChain = readFileSync(join(certDir, "apiserver.crt"), "utf8");
  const caPem = servingChain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g)?.at(-1) ?? "";
  const kubeconfigPath = join(dir, "kubeconfig");
  writeFileSync(
    kubeconfigPath,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        { name: "pomona", cluster: { server, "certificate-authority-data": Buffer.from(caPem).toString("base64") } },
      ],
      users: [{ name: "admin", user: { token } }],
      contexts: [{ name: "pomona", context: { cluster: "pomona", user: "admin", namespace: "default" } }],
      "current-context": "pomona",
    }),
    { mode: 0o600 },
  );

  const controllerManager = start(
    "kube-controller-manager",
    binaries.kubeControllerManager,
    [
      `--kubeconfig=${kubeconfigPath}`,
      "--controllers=garbagecollector,namespace,serviceaccount",
      "--leader-elect=false",
      "--secure-port=0",
    ],
    logDir,
  );

  const { body } = await getUnverified(`${server}/version`, token);
  const version = (JSON.parse(body) as { gitVersion: string }).gitVersion;

  return {
    kubeconfigPath,
    server,
    token,
    binaries,
    version,
    async restartApiserver() {
      await stopProcess(apiserver);
      await startApiserver();
    },
    async stop() {
      await stopProcess(controllerManager);
      await stopProcess(apiserver);
      await stopProcess(etcd);
    },
  };
}

/** A GET against the apiserver before its CA is known: the self-signed CA is read only once it is up. */
function getUnverified(url: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      { rejectUnauthorized: false, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error("timeout")));
    req.end();
  });
}
