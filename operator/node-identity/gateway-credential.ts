/**
 * The gateway's client certificate for node-agents (CN pomona-gateway), with the CA it checks nodes
 * against, kept fresh in a Secret of the system namespace: minted when missing, for another CA, or two
 * thirds into its life. The gateway watches the Secret and uses a new certificate for new connections,
 * so a rotation drops no request.
 */
import type { V1Secret } from "@kubernetes/client-node";
import { nodeIdentity } from "../../crds/api/index.ts";
import { KubeApiError, type KubeRest, secretsPath } from "../../kube/rest.ts";
import { type Credential, generateKeyPair, privateKeyPem, renewAt, signCertificate } from "../../pki/x509.ts";
import type { Reconcile } from "../runtime/controller.ts";

/** Look again at least this often, so a deleted Secret comes back. */
const RECHECK_MS = 60_000;

export function createGatewayCredentialReconciler(
  rest: KubeRest,
  options: { namespace: string; ca: Credential; lifetimeMs: number },
): Reconcile {
  const name = nodeIdentity.gatewayClientSecret;
  const { namespace, ca } = options;
  return async () => {
    const current = await read(rest, namespace, name);
    const fresh = current?.["ca.crt"] === ca.cert && current["tls.crt"] && Date.now() < renewAt(current["tls.crt"]);
    let cert = current?.["tls.crt"];
    if (!fresh) {
      const keys = await generateKeyPair();
      cert = await signCertificate({
        ca,
        commonName: nodeIdentity.gatewayCommonName,
        altNames: [],
        publicKey: keys,
        usage: "client",
        lifetimeMs: options.lifetimeMs,
      });
      const body = {
        metadata: { name, namespace, labels: { "app.kubernetes.io/managed-by": "pomona-operator" } },
        type: "kubernetes.io/tls",
        stringData: { "tls.crt": cert, "tls.key": await privateKeyPem(keys), "ca.crt": ca.cert },
      };
      if (current) await rest.replace(`${secretsPath(namespace)}/${name}`, body);
      else await rest.create(secretsPath(namespace), body);
    }
    return { requeueAfterMs: Math.max(1_000, Math.min(RECHECK_MS, renewAt(cert!) - Date.now())) };
  };
}

async function read(rest: KubeRest, namespace: string, name: string): Promise<Record<string, string> | undefined> {
  try {
    const secret = await rest.get<V1Secret>(`${secretsPath(namespace)}/${name}`);
    return Object.fromEntries(
      Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
    );
  } catch (err) {
    if (err instanceof KubeApiError && err.code === 404) return undefined;
    throw err;
  }
}
