/**
 * Whether the operator signs a node-agent's certificate request: a pure decision on the request, the
 * identity the API server recorded for whoever created it, and the Node it names. A node gets a
 * serving certificate only for itself and only for the addresses its Node has registered, so the
 * gateway, which checks both, never talks to an endpoint that is not the node's.
 */
import type { V1Node } from "@kubernetes/client-node";
import { labels, nodeIdentity, nodeNameExtra } from "../../crds/api/index.ts";
import type { SubjectAltName } from "../../pki/x509.ts";

export interface Requester {
  username: string;
  groups: string[];
  /** The API server's `extra`, e.g. authentication.kubernetes.io/node-name for a Pod's ServiceAccount token. */
  extra: Record<string, string[]>;
}

export interface NodeCertificateRequest {
  commonName: string | undefined;
  altNames: SubjectAltName[];
  otherAltNames: number;
  signatureValid: boolean;
  /** The node named by the request's label. */
  node: string;
}

export type Decision = { approve: true } | { approve: false; reason: string; message: string };

const deny = (reason: string, message: string): Decision => ({ approve: false, reason, message });

export function decideNodeCertificate(
  request: NodeCertificateRequest,
  requester: Requester,
  node: V1Node | undefined,
  nodeAgentServiceAccount: string,
): Decision {
  const name = request.node;
  if (!request.signatureValid) return deny("BadSignature", "the request is not signed by the key it carries");
  if (request.commonName !== nodeIdentity.nodeCommonName(name)) {
    return deny("WrongCommonName", `the request must name CN=${nodeIdentity.nodeCommonName(name)}`);
  }
  if (!mayRequestFor(requester, name, nodeAgentServiceAccount)) {
    return deny("NotThisNode", `${requester.username} may not request a certificate for node ${name}`);
  }
  if (!node) return deny("NodeNotFound", `node ${name} is not registered`);
  if (node.metadata?.labels?.[labels.inferenceNode] !== "true") {
    return deny("NotAnInferenceNode", `node ${name} is not a Pomona inference node`);
  }
  if (request.otherAltNames > 0) return deny("UnsupportedName", "only DNS names and IP addresses are signed");
  const addresses = node.status?.addresses ?? [];
  const ips = new Set(
    addresses.filter((a) => a.type === "InternalIP" || a.type === "ExternalIP").map((a) => a.address),
  );
  const dns = new Set([
    name,
    ...addresses.filter((a) => a.type.endsWith("DNS") || a.type === "Hostname").map((a) => a.address),
  ]);
  for (const alt of request.altNames) {
    const registered = alt.type === "ip" ? ips.has(alt.value) : dns.has(alt.value);
    if (!registered) {
      return deny("AddressNotRegistered", `${alt.value} is not an address node ${name} has registered`);
    }
  }
  if (!request.altNames.some((a) => a.type === "ip")) {
    return deny("NoAddress", "the request names none of the node's IP addresses");
  }
  return { approve: true };
}

/**
 * Cluster admins may request for any node (they could anyway); the node-agents' ServiceAccount only for
 * the node its token is bound to: a DaemonSet Pod's token names its node, and a Mac's token is minted
 * bound to its Node (docs/macos-node-agent.md).
 */
function mayRequestFor(requester: Requester, node: string, nodeAgentServiceAccount: string): boolean {
  if (requester.groups.includes("system:masters")) return true;
  const [namespace, account] = nodeAgentServiceAccount.split("/");
  if (requester.username !== `system:serviceaccount:${namespace}:${account}`) return false;
  const nodes = requester.extra[nodeNameExtra] ?? [];
  return nodes.length === 1 && nodes[0] === node;
}
