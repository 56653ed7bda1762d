// The operator's informer keeps its cache current across a broken connection: the client's list-watch
// stops on errors other than 410 Gone, and the wrapper must start it again. The API server is real; a
// plain TCP relay in front of it (ours, in this test) is what breaks, as a network or a load balancer would.
import { connect, createServer, type Server, type Socket } from "node:net";
import { KubeConfig, type V1ConfigMap } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { freePort } from "../controlplane/local-control-plane.ts";
import { Informer } from "../operator/runtime/informer.ts";
import type { Logger } from "../operator/runtime/log.ts";
import { createNamespaces } from "./operator-support.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { eventually } from "./support/processes.ts";

const ns = "op-informer";
const lines: string[] = [];
const log: Logger = {
  info: (m) => lines.push(m),
  warn: (m) => lines.push(m),
  error: (m) => lines.push(m),
  child: () => log,
};

class Relay {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  readonly port: number;
  private readonly target: URL;

  constructor(port: number, target: URL) {
    this.port = port;
    this.target = target;
  }

  open(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = connect(Number(this.target.port), this.target.hostname);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.once("close", () => this.sockets.delete(s));
        s.on("error", () => {});
      }
      client.pipe(upstream).pipe(client);
    });
    return new Promise((resolve) => this.server?.listen(this.port, "127.0.0.1", resolve));
  }

  /** Stop accepting and cut every open connection, watches included. */
  async break(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server?.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
  }
}

let relay: Relay;
let informer: Informer<V1ConfigMap>;

beforeAll(async () => {
  await createNamespaces(ns);
  const kc = new KubeConfig();
  kc.loadFromFile(inject("kubeconfig"));
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("no cluster in the kubeconfig");
  relay = new Relay(await freePort(), new URL(cluster.server));
  await relay.open();
  const relayed = new KubeConfig();
  relayed.loadFromOptions({
    clusters: [{ ...cluster, server: `https://127.0.0.1:${relay.port}` }],
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  informer = new Informer<V1ConfigMap>(
    relayed,
    { path: `/api/v1/namespaces/${ns}/configmaps`, apiVersion: "v1", kind: "ConfigMap", namespace: ns },
    log,
  );
});

afterAll(async () => {
  informer?.stop();
  await relay?.break();
  await kubectl(["delete", "namespace", ns, "--wait=false"]);
});

describe("informer", () => {
  it("syncs, follows changes, and after the connection breaks starts again and catches up", async () => {
    const changes: string[] = [];
    informer.onChange((o) => changes.push(o.metadata?.name ?? ""));
    await informer.start();
    expect(informer.hasSynced).toBe(true);
    await kubectlOk(["create", "configmap", "before", "-n", ns]);
    await eventually("the informer to see 'before'", async () => (informer.get("before", ns) ? true : undefined));

    await relay.break();
    await kubectlOk(["create", "configmap", "during", "-n", ns]);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(informer.get("during", ns)).toBeUndefined();
    await relay.open();

    await eventually(
      "the informer to catch up after the break",
      async () => (informer.get("during", ns) ? true : undefined),
      45_000,
    );
    expect(lines).toContain("watch stopped; restarting");
    expect(changes).toContain("during");
    await kubectlOk(["create", "configmap", "after", "-n", ns]);
    await eventually("the informer to follow new changes", async () => (informer.get("after", ns) ? true : undefined));
  }, 90_000);
});
