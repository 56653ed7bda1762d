/**
 * The node's serving certificate: a key made here that never leaves the process, a
 * CertificateSigningRequest for `pomona.dev/node-serving` naming this node and its registered address,
 * and the certificate the operator signs into it (the node's, then the CA's). Renewed two thirds into
 * its life with a new key; `onRenewed` swaps it into the running server, so open connections go on.
 */
import { randomBytes } from "node:crypto";
import { isIP } from "node:net";
import type { KubeConfig, V1CertificateSigningRequest } from "@kubernetes/client-node";
// The watch module alone: the package's index loads every generated API (kube/rest.ts).
import { Watch } from "@kubernetes/client-node/dist/watch.js";
import type { FastifyBaseLogger } from "fastify";
import { nodeIdentity } from "../crds/api/index.ts";
import { certificateSigningRequestsPath, errorText, KubeRest } from "../kube/rest.ts";
import { createCertificateRequest, generateKeyPair, privateKeyPem, renewAt } from "../pki/x509.ts";

export interface ServingCredential {
  key: string;
  /** This node's certificate. */
  cert: string;
  /** The CA that signed it, which also signs the gateway's client certificate. */
  ca: string;
}

interface IdentityOptions {
  nodeName: string;
  address: string;
  log: FastifyBaseLogger;
  onRenewed: (credential: ServingCredential) => void;
}

/** How long to wait for the operator to sign before trying again. */
const SIGN_TIMEOUT_MS = 60_000;
const RETRY_MS = 10_000;
/** The API server refuses shorter; the operator caps it at its own lifetime setting. */
const REQUESTED_SECONDS = 7 * 86_400;

export class ServingIdentity {
  private readonly api: KubeRest;
  private readonly kubeConfig: KubeConfig;
  private readonly options: IdentityOptions;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(kubeConfig: KubeConfig, options: IdentityOptions) {
    this.kubeConfig = kubeConfig;
    this.options = options;
    this.api = new KubeRest(kubeConfig);
  }

  /** The first certificate; retries until the operator signs (a denial is logged with its reason). */
  async start(): Promise<ServingCredential> {
    for (;;) {
      try {
        const credential = await this.request();
        this.scheduleRenewal(credential);
        return credential;
      } catch (err) {
        if (this.stopped) throw err;
        this.options.log.warn({ err: errorText(err) }, "no serving certificate yet; asking again shortly");
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
    }
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private scheduleRenewal(credential: ServingCredential, afterMs = renewAt(credential.cert) - Date.now()): void {
    if (this.stopped) return;
    this.timer = setTimeout(
      () => {
        this.request().then(
          (next) => {
            this.options.onRenewed(next);
            this.options.log.info("serving certificate renewed");
            this.scheduleRenewal(next);
          },
          (err) => {
            this.options.log.warn({ err: errorText(err) }, "serving certificate renewal failed; trying again");
            this.scheduleRenewal(credential, RETRY_MS);
          },
        );
      },
      Math.max(0, afterMs),
    );
    this.timer.unref();
  }

  private async request(): Promise<ServingCredential> {
    const { nodeName, address } = this.options;
    const keys = await generateKeyPair();
    const altNames = [
      { type: isIP(address) ? ("ip" as const) : ("dns" as const), value: address },
      { type: "dns" as const, value: nodeName },
    ];
    const pem = await createCertificateRequest(keys, nodeIdentity.nodeCommonName(nodeName), altNames);
    const name = `pomona-node-${nodeName}-${randomBytes(4).toString("hex")}`.slice(0, 253);
    await this.api.create(certificateSigningRequestsPath, {
      metadata: { name, labels: { [nodeIdentity.nodeLabel]: nodeName } },
      spec: {
        signerName: nodeIdentity.signerName,
        request: Buffer.from(pem).toString("base64"),
        usages: ["digital signature", "server auth"],
        expirationSeconds: REQUESTED_SECONDS,
      },
    });
    try {
      const chain = await this.signed(name);
      const certs = chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
      if (certs.length < 2) throw new Error("the signed certificate does not carry its CA");
      return { key: await privateKeyPem(keys), cert: certs[0]!, ca: certs[certs.length - 1]! };
    } finally {
      // The request has done its job (or failed); the certificate lives on in this process only.
      await this.api.delete(`${certificateSigningRequestsPath}/${name}`).catch(() => {});
    }
  }

  /** Wait on the request's watch events until it is signed or denied. */
  private signed(name: string): Promise<string> {
    return new Promise((resolve, reject) => {
      let abort: { abort: () => void } | undefined;
      const finish = (err: Error | undefined, cert?: string) => {
        clearTimeout(timeout);
        abort?.abort();
        if (err) reject(err);
        else resolve(cert!);
      };
      const timeout = setTimeout(
        () => finish(new Error(`request ${name} was not signed within ${SIGN_TIMEOUT_MS / 1000} s`)),
        SIGN_TIMEOUT_MS,
      );
      new Watch(this.kubeConfig)
        .watch(
          certificateSigningRequestsPath,
          { fieldSelector: `metadata.name=${name}` },
          (_phase, csr: V1CertificateSigningRequest) => {
            const denied = csr.status?.conditions?.find((c) => c.type === "Denied" || c.type === "Failed");
            if (denied) finish(new Error(`the operator refused: ${denied.reason}: ${denied.message ?? ""}`));
            else if (csr.status?.certificate)
              finish(undefined, Buffer.from(csr.status.certificate, "base64").toString());
          },
          (err) => {
            if (err) finish(err as Error);
          },
        )
        .then(
          (a) => {
            abort = a;
          },
          (err) => finish(err as Error),
        );
    });
  }
}
