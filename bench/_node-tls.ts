/**
 * Mutual TLS between a benchmark's gateway and node-agent, as `npm start` and the chart run that hop
 * (docs/security.md): a node CA, the node's serving certificate for 127.0.0.1 naming node `bench-node`
 * (the node of the benchmarks' endpoints, bench/_gateway-config.ts) and the gateway's client certificate,
 * made with the operator's own signing code. Handed to the child processes as JSON.
 */
import { nodeIdentity } from "../crds/api/index.ts";
import {
  createCertificateAuthority,
  generateKeyPair,
  privateKeyPem,
  signCertificate,
  type Usage,
} from "../pki/x509.ts";

export interface BenchNodeTls {
  /** For the node-agent: its serving certificate and key, and the CA that also signed the gateway's. */
  node: { cert: string; key: string; ca: string };
  /** For the gateway: its client certificate and key, and the CA it checks nodes against. */
  gateway: { cert: string; key: string; ca: string };
}

const DAY_MS = 24 * 3600_000;

export async function benchNodeTls(): Promise<BenchNodeTls> {
  const ca = await createCertificateAuthority("pomona-bench-node-ca", DAY_MS);
  const issue = async (commonName: string, usage: Usage, altNames: { type: "ip"; value: string }[]) => {
    const keys = await generateKeyPair();
    const cert = await signCertificate({ ca, commonName, altNames, publicKey: keys, usage, lifetimeMs: DAY_MS });
    return { cert, key: await privateKeyPem(keys), ca: ca.cert };
  };
  return {
    node: await issue(nodeIdentity.nodeCommonName("bench-node"), "server", [{ type: "ip", value: "127.0.0.1" }]),
    gateway: await issue(nodeIdentity.gatewayCommonName, "client", []),
  };
}
