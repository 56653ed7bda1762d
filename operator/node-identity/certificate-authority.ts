/**
 * The CA of node identity: made once and kept in a Secret of the system namespace that only the
 * operator reads. It signs node-agents' serving certificates and the gateway's client certificate.
 */
import type { V1Secret } from "@kubernetes/client-node";
import { nodeIdentity } from "../../crds/api/index.ts";
import { KubeApiError, type KubeRest, secretsPath } from "../../kube/rest.ts";
import { type Credential, createCertificateAuthority } from "../../pki/x509.ts";

const CA_LIFETIME_MS = 10 * 365 * 86_400_000;

export async function loadOrCreateCa(rest: KubeRest, namespace: string): Promise<Credential> {
  const name = nodeIdentity.caSecret;
  const existing = await read(rest, namespace, name);
  if (existing) return existing;
  const ca = await createCertificateAuthority("pomona-node-ca", CA_LIFETIME_MS);
  try {
    await rest.create(secretsPath(namespace), {
      metadata: { name, namespace, labels: { "app.kubernetes.io/managed-by": "pomona-operator" } },
      type: "Opaque",
      stringData: { "ca.crt": ca.cert, "ca.key": ca.key },
    });
    return ca;
  } catch (err) {
    // Another operator made it first: use theirs, so there is one CA.
    if (err instanceof KubeApiError && err.code === 409) {
      const theirs = await read(rest, namespace, name);
      if (theirs) return theirs;
    }
    throw err;
  }
}

async function read(rest: KubeRest, namespace: string, name: string): Promise<Credential | undefined> {
  try {
    const secret = await rest.get<V1Secret>(`${secretsPath(namespace)}/${name}`);
    const cert = secret.data?.["ca.crt"];
    const key = secret.data?.["ca.key"];
    if (!cert || !key) throw new Error(`Secret ${namespace}/${name} lacks ca.crt or ca.key`);
    return { cert: Buffer.from(cert, "base64").toString("utf8"), key: Buffer.from(key, "base64").toString("utf8") };
  } catch (err) {
    if (err instanceof KubeApiError && err.code === 404) return undefined;
    throw err;
  }
}
