// The gateway as deployed (gateway/main.ts in its own process), reading its config from the API server.
import { inject } from "vitest";
import { freePort } from "../../controlplane/local-control-plane.ts";
import { NODE_TOKEN, writeHashingSecret } from "./gateway.ts";
import { eventually, startNode, type TestProcess } from "./processes.ts";

export interface GatewayProcess {
  process: TestProcess;
  url: string;
}

export async function startGatewayProcess(
  namespace: string,
  env: Record<string, string> = {},
  kubeconfig: string = inject("kubeconfig"),
): Promise<GatewayProcess> {
  const port = await freePort();
  // As the operator would have; configs published by ConfigFeed are hashed with this key.
  await writeHashingSecret(namespace, "create-if-absent", kubeconfig);
  const process = startNode("gateway/main.ts", [], {
    KUBECONFIG: kubeconfig,
    POMONA_NAMESPACE: namespace,
    POMONA_GATEWAY_PORT: String(port),
    POMONA_GATEWAY_HOST: "127.0.0.1",
    POMONA_NODE_TOKEN: NODE_TOKEN,
    // Stand-in configs without an operator to sign certificates: plain HTTP; test/node-identity.test.ts runs TLS.
    POMONA_NODE_TLS: "off",
    POMONA_LOG_LEVEL: "info",
    // Every test client is 127.0.0.1: see RELAXED_INVALID_KEYS.
    POMONA_INVALID_KEY_BURST: "1000000",
    POMONA_INVALID_KEY_REFILL_PER_MINUTE: "1000000",
    ...env,
  });
  const url = `http://127.0.0.1:${port}`;
  await eventually(
    "gateway process ready",
    async () => ((await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined),
    60_000,
  );
  return { process, url };
}

/** Resident memory of a process in bytes, from /proc (Linux). */
export async function residentBytes(pid: number): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const line = (await readFile(`/proc/${pid}/status`, "utf8")).split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(line?.match(/(\d+)/)?.[1] ?? Number.NaN) * 1024;
}
