/**
 * The CA of node identity: made once and kept in a Secret of the system namespace that only the
 * operator reads. It signs node-agents' serving certificates and the gateway's client certificate.
 */
import { ApiException, type CoreV1Api } from "@kubernetes/client-node";
import { nodeIdentity } from "../../crds/api/index.ts";
import { type Credential, createCertificateAuthority } from "../../pki/x509.ts";

const CA_LIFETIME_MS = 10 * 365 * 86_400_000;

export async function loadOrCreateCa(core: CoreV1Api, namespace: string): Promise<Credential> {
  const name = nodeIdentity.caSecret;
  const existing = await read(core, namespace, name);
  if (existing) return existing;
  const ca = await createCertificateAuthority("pomona-node-ca", CA_LIFETIME_MS);
  try {
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name, namespace, labels: { "app.kubernetes.io/managed-by": "pomona-operator" } },
        type: "Opaque",
        stringData: { "ca.crt": ca.cert, "ca.key": ca.key },
      },
    });
    return ca;
  } catch (err) {
    // Another operator made it first: use theirs, so there is one CA.
    if (err instanceof ApiException && err.code === 409) {
      const theirs = await read(core, namespace, name);
      if (theirs) return theirs;
    }
    throw err;
  }
}

async function read(core: CoreV1Api, namespace: string, name: string): Promise<Credential | undefined> {
  try {
    const secret = await core.readNamespacedSecret({ name, namespace });
    const cert = secret.data?.["ca.crt"];
    const key = secret.data?.["ca.key"];
    if (!cert || !key) throw new Error(`Secret ${namespace}/${name} lacks ca.crt or ca.key`);
    return { cert: Buffer.from(cert, "base64").toString("utf8"), key: Buffer.from(key, "base64").toString("utf8") };
  } catch (err) {
    if (err instanceof ApiException && err.code === 404) return undefined;
    throw err;
  }
}
