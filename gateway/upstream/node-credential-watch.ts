/**
 * Follows the Secret with the gateway's client certificate for node-agents, which the operator mints and
 * renews (operator/node-identity/gateway-credential.ts), and hands every new version to the transport.
 */
import type { KubeConfig, V1Secret } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import { nodeIdentity } from "../../crds/api/index.ts";
import { NamedSecretWatch } from "../config-source/named-secret-watch.ts";
import type { ClientCredential } from "./node-transport.ts";

export function watchNodeCredential(
  kubeConfig: KubeConfig,
  namespace: string,
  use: (credential: ClientCredential) => void,
  log: FastifyBaseLogger,
): NamedSecretWatch {
  let lastCert: string | undefined;
  const take = (secret: V1Secret) => {
    const text = (k: string) => (secret.data?.[k] ? Buffer.from(secret.data[k], "base64").toString("utf8") : "");
    const credential = { cert: text("tls.crt"), key: text("tls.key"), ca: text("ca.crt") };
    if (!credential.cert || !credential.key || !credential.ca) {
      log.warn("node client certificate Secret is incomplete; keeping the current one");
      return;
    }
    if (credential.cert === lastCert) return;
    lastCert = credential.cert;
    use(credential);
    log.info("node client certificate in use");
  };
  return new NamedSecretWatch({
    kubeConfig,
    namespace,
    name: nodeIdentity.gatewayClientSecret,
    log,
    onSecret: take,
    onMissing: () => log.warn("no node client certificate yet; requests to nodes wait for the operator to mint it"),
  });
}
