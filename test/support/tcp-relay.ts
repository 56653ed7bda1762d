// A plain TCP relay in front of the API server, which tests break as a network or a load balancer would.
import { connect, createServer, type Server, type Socket } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";
import { freePort } from "../../controlplane/local-control-plane.ts";

export class Relay {
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

/** An open relay to the API server of `kubeconfigPath`, and a kubeconfig that goes through it. */
export async function relayedKubeConfig(kubeconfigPath: string): Promise<{ relay: Relay; kubeConfig: KubeConfig }> {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("no cluster in the kubeconfig");
  const relay = new Relay(await freePort(), new URL(cluster.server));
  await relay.open();
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ ...cluster, server: `https://127.0.0.1:${relay.port}` }],
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return { relay, kubeConfig };
}
