// The operator's API calls share connections: @kubernetes/client-node 2.0 builds a new undici Agent for every
// request, so without reuseConnections every call opens (and leaves lingering) its own TLS connection. The API
// server is real; a plain TCP relay in front of it (ours, in this test) counts the connections.
import { connect, createServer, type Server, type Socket } from "node:net";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../controlplane/local-control-plane.ts";
import { reuseConnections } from "../kube/connections.ts";
import { KubeRest } from "../kube/rest.ts";

let server: Server;
let connections = 0;
const sockets = new Set<Socket>();
let relayed: () => KubeConfig;

beforeAll(async () => {
  const kc = new KubeConfig();
  kc.loadFromFile(inject("kubeconfig"));
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("no cluster in the kubeconfig");
  const target = new URL(cluster.server);
  server = createServer((client) => {
    connections++;
    const upstream = connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.once("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  relayed = () => {
    const k = new KubeConfig();
    k.loadFromOptions({
      clusters: [{ ...cluster, server: `https://127.0.0.1:${port}` }],
      users: kc.users,
      contexts: kc.contexts,
      currentContext: kc.currentContext,
    });
    return k;
  };
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

async function connectionsFor(kc: KubeConfig): Promise<number> {
  const before = connections;
  const core = kc.makeApiClient(CoreV1Api);
  for (let i = 0; i < 20; i++) await core.readNamespace({ name: "default" });
  return connections - before;
}

describe("reuseConnections", () => {
  it("sends one after another over one connection what the client alone sends over one each", async () => {
    // The client's own behaviour, measured so that the test fails if a new client-node fixes it (then drop ours).
    expect(await connectionsFor(relayed())).toBe(20);
    const kc = relayed();
    reuseConnections(kc);
    expect(await connectionsFor(kc)).toBe(1);
    // Another API client of the same KubeConfig shares the pool.
    expect(await connectionsFor(kc)).toBe(0);
  });

  it("carries the operator's own REST calls (kube/rest.ts) over the same one connection", async () => {
    const kc = relayed();
    reuseConnections(kc);
    const before = connections;
    const rest = new KubeRest(kc);
    for (let i = 0; i < 20; i++) await rest.get("/api/v1/namespaces/default");
    expect(connections - before).toBe(1);
  });
});
