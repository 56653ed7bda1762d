/**
 * Follows the Secret with the gateway's client certificate for node-agents, which the operator mints and
 * renews (operator/node-identity/gateway-credential.ts), and hands every new version to the transport.
 */
import { type KubeConfig, type V1Secret, Watch } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import { nodeIdentity } from "../../crds/api/index.ts";
import type { ClientCredential } from "./node-transport.ts";

export class NodeCredentialWatch {
  private readonly watch: Watch;
  private abort: { abort: () => void } | undefined;
  private stopped = false;
  private backoffMs = 500;
  private timer: NodeJS.Timeout | undefined;
  private lastCert: string | undefined;
  private readonly namespace: string;
  private readonly use: (credential: ClientCredential) => void;
  private readonly log: FastifyBaseLogger;

  constructor(
    kubeConfig: KubeConfig,
    namespace: string,
    use: (credential: ClientCredential) => void,
    log: FastifyBaseLogger,
  ) {
    this.watch = new Watch(kubeConfig);
    this.namespace = namespace;
    this.use = use;
    this.log = log;
  }

  start(): void {
    if (this.stopped) return;
    const restart = (err: unknown) => {
      if (this.stopped) return;
      if (err && (err as { name?: string }).name !== "TimeoutError") {
        this.log.warn({ err: String(err) }, "node client certificate watch ended; restarting");
      }
      this.timer = setTimeout(() => this.start(), this.backoffMs);
      this.timer.unref();
      this.backoffMs = Math.min(this.backoffMs * 2, 10_000);
    };
    this.watch
      .watch(
        `/api/v1/namespaces/${this.namespace}/secrets`,
        { fieldSelector: `metadata.name=${nodeIdentity.gatewayClientSecret}` },
        (phase, secret: V1Secret) => {
          this.backoffMs = 500;
          if (phase === "ADDED" || phase === "MODIFIED") this.take(secret);
        },
        restart,
      )
      .then((abort) => {
        this.abort = abort;
        if (this.stopped) abort.abort();
      }, restart);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort?.abort();
  }

  private take(secret: V1Secret): void {
    const text = (k: string) => (secret.data?.[k] ? Buffer.from(secret.data[k], "base64").toString("utf8") : "");
    const credential = { cert: text("tls.crt"), key: text("tls.key"), ca: text("ca.crt") };
    if (!credential.cert || !credential.key || !credential.ca) {
      this.log.warn("node client certificate Secret is incomplete; keeping the current one");
      return;
    }
    if (credential.cert === this.lastCert) return;
    this.lastCert = credential.cert;
    this.use(credential);
    this.log.info("node client certificate in use");
  }
}
