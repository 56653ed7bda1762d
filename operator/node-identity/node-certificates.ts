/**
 * The signer of `pomona.dev/node-serving`: approves or denies each node-agent's
 * CertificateSigningRequest (approval.ts decides) and signs the approved ones with the node CA. The
 * certificate written back is the node's followed by the CA's, so the node-agent learns the CA it
 * checks the gateway's client certificate against from the same answer.
 */
import type { V1CertificateSigningRequest } from "@kubernetes/client-node";
import { nodeIdentity } from "../../crds/api/index.ts";
import { certificateSigningRequestsPath, KubeApiError, type KubeRest } from "../../kube/rest.ts";
import { type Credential, parseCertificateRequest, signCertificate } from "../../pki/x509.ts";
import type { Cluster } from "../cluster.ts";
import type { Reconcile } from "../runtime/controller.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Manager } from "../runtime/manager.ts";
import { decideNodeCertificate } from "./approval.ts";

export const certificateRequestInformer = (manager: Manager) =>
  manager.informer<V1CertificateSigningRequest>({
    path: certificateSigningRequestsPath,
    kind: "CertificateSigningRequest",
    labelSelector: nodeIdentity.nodeLabel,
  });

const conditionOf = (csr: V1CertificateSigningRequest, type: string) =>
  csr.status?.conditions?.some((c) => c.type === type && c.status === "True") ?? false;

export function createNodeCertificateSigner(
  cluster: Cluster,
  requests: Informer<V1CertificateSigningRequest>,
  options: { ca: Credential; nodeAgentServiceAccount: string; lifetimeMs: number },
): Reconcile {
  const api = cluster.applier.rest;
  return async (name) => {
    const csr = requests.get(name);
    if (!csr || csr.spec.signerName !== nodeIdentity.signerName) return undefined;
    if (csr.status?.certificate || conditionOf(csr, "Denied") || conditionOf(csr, "Failed")) return undefined;
    const node = csr.metadata?.labels?.[nodeIdentity.nodeLabel] ?? "";
    let parsed: Awaited<ReturnType<typeof parseCertificateRequest>>;
    try {
      parsed = await parseCertificateRequest(Buffer.from(csr.spec.request, "base64").toString("utf8"));
    } catch {
      await setCondition(api, csr, "Denied", "Unreadable", "the request is not a PEM PKCS#10 request");
      return undefined;
    }
    const decision = decideNodeCertificate(
      { ...parsed, node },
      { username: csr.spec.username ?? "", groups: csr.spec.groups ?? [], extra: csr.spec.extra ?? {} },
      cluster.nodes.get(node),
      options.nodeAgentServiceAccount,
    );
    if (!decision.approve) {
      cluster.log.warn("node certificate request denied", { request: name, node, reason: decision.reason });
      await setCondition(api, csr, "Denied", decision.reason, decision.message);
      return undefined;
    }
    const approved = conditionOf(csr, "Approved")
      ? csr
      : await setCondition(api, csr, "Approved", "NodeVerified", `node ${node} requested its own addresses`);
    const requested = (csr.spec.expirationSeconds ?? Number.POSITIVE_INFINITY) * 1000;
    const cert = await signCertificate({
      ca: options.ca,
      commonName: nodeIdentity.nodeCommonName(node),
      altNames: parsed.altNames,
      publicKey: parsed.publicKey,
      usage: "server",
      lifetimeMs: Math.min(requested, options.lifetimeMs),
    });
    approved.status = { ...approved.status, certificate: Buffer.from(cert + options.ca.cert).toString("base64") };
    await api.replace(`${certificateSigningRequestsPath}/${name}/status`, approved);
    cluster.log.info("node certificate signed", { request: name, node });
    return undefined;
  };
}

async function setCondition(
  api: KubeRest,
  csr: V1CertificateSigningRequest,
  type: "Approved" | "Denied",
  reason: string,
  message: string,
): Promise<V1CertificateSigningRequest> {
  const name = csr.metadata?.name ?? "";
  const now = new Date();
  csr.status = {
    ...csr.status,
    conditions: [
      ...(csr.status?.conditions ?? []),
      { type, status: "True", reason, message, lastUpdateTime: now, lastTransitionTime: now },
    ],
  };
  try {
    return await api.replace<V1CertificateSigningRequest>(`${certificateSigningRequestsPath}/${name}/approval`, csr);
  } catch (err) {
    // Changed meanwhile: the informer brings the new version and the key comes back.
    if (err instanceof KubeApiError && err.code === 409) throw new Error(`request ${name} changed; retrying`);
    throw err;
  }
}
