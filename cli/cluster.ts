/**
 * Which cluster `pomona` talks to: the kubeconfig given by flag or KUBECONFIG,
 * or else the local control plane kept in the state directory, so a restart
 * finds the objects it left.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, type RunningControlPlane, startControlPlane } from "../controlplane/local-control-plane.ts";

export interface Cluster {
  kubeconfigPath: string;
  /** Set when Pomona started the control plane itself. */
  local?: RunningControlPlane;
}

interface KeptPorts {
  etcdPort: number;
  apiserverPort: number;
}

/** The local control plane keeps its ports, so the kubeconfig in the state directory stays valid across restarts. */
async function keptPorts(stateDir: string): Promise<KeptPorts> {
  const file = join(stateDir, "ports.json");
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as KeptPorts;
  const ports = { etcdPort: await freePort(), apiserverPort: await freePort() };
  writeFileSync(file, JSON.stringify(ports));
  return ports;
}

export async function resolveCluster(options: {
  kubeconfig?: string;
  stateDir: string;
  log: (line: string) => void;
}): Promise<Cluster> {
  const given = options.kubeconfig ?? process.env.KUBECONFIG;
  if (given) return { kubeconfigPath: given };
  const dir = join(options.stateDir, "control-plane");
  mkdirSync(dir, { recursive: true });
  const local = await startControlPlane({ dir, ...(await keptPorts(dir)), log: options.log });
  return { kubeconfigPath: local.kubeconfigPath, local };
}

const gatewayAdminUrlFile = (stateDir: string) => join(stateDir, "gateway-admin-url");

/** `pomona up` notes where its gateway's internal listener is, so `pomona status` finds it whatever the port. */
export function recordGatewayAdminUrl(stateDir: string, url: string): void {
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(gatewayAdminUrlFile(stateDir), url);
}

/**
 * The gateway's internal listener (metrics, not the public API) to ask for breaker states:
 * POMONA_GATEWAY_ADMIN_URL, else the one `pomona up` recorded, else the default admin port.
 */
export function gatewayAdminUrlFor(stateDir: string): string {
  if (process.env.POMONA_GATEWAY_ADMIN_URL) return process.env.POMONA_GATEWAY_ADMIN_URL;
  const file = gatewayAdminUrlFile(stateDir);
  return existsSync(file) ? readFileSync(file, "utf8").trim() : "http://127.0.0.1:9090";
}

/** The kubeconfig a running `pomona up` uses, for the other verbs. */
export function kubeconfigFor(options: { kubeconfig?: string; stateDir: string }): string {
  const given = options.kubeconfig ?? process.env.KUBECONFIG;
  if (given) return given;
  const local = join(options.stateDir, "control-plane", "kubeconfig");
  if (!existsSync(local)) throw new Error(`no cluster: pass --kubeconfig, set KUBECONFIG, or run \`pomona up\` first`);
  return local;
}
