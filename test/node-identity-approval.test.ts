// The operator's decision on a node's certificate request, as a plain function: no API server needed.
import { describe, expect, it } from "vitest";
import { labels, nodeIdentity } from "../crds/api/index.ts";
import { decideNodeCertificate } from "../operator/node-identity/approval.ts";

describe("who may request a node's certificate", () => {
  it("is decided from the request, the requester and the Node", () => {
    const node = {
      metadata: { name: "mac1", labels: { [labels.inferenceNode]: "true" } },
      status: { addresses: [{ type: "InternalIP", address: "10.0.0.5" }] },
    };
    const request = {
      commonName: nodeIdentity.nodeCommonName("mac1"),
      altNames: [
        { type: "ip" as const, value: "10.0.0.5" },
        { type: "dns" as const, value: "mac1" },
      ],
      otherAltNames: 0,
      signatureValid: true,
      node: "mac1",
    };
    const sa = "pomona-system/pomona-node-agent";
    const agentOn = (n: string) => ({
      username: "system:serviceaccount:pomona-system:pomona-node-agent",
      groups: ["system:serviceaccounts"],
      extra: { "authentication.kubernetes.io/node-name": [n] },
    });
    const mac = agentOn("mac1");
    const admin = { username: "admin", groups: ["system:masters"], extra: {} };
    expect(decideNodeCertificate(request, mac, node, sa)).toEqual({ approve: true });
    expect(decideNodeCertificate(request, admin, node, sa)).toEqual({ approve: true });
    const reasonOf = (d: ReturnType<typeof decideNodeCertificate>) => (d.approve ? "approved" : d.reason);
    expect(reasonOf(decideNodeCertificate(request, agentOn("mac2"), node, sa))).toBe("NotThisNode");
    expect(reasonOf(decideNodeCertificate(request, { ...mac, extra: {} }, node, sa))).toBe("NotThisNode");
    const otherAccount = { ...mac, username: "system:serviceaccount:team:someone" };
    expect(reasonOf(decideNodeCertificate(request, otherAccount, node, sa))).toBe("NotThisNode");
    expect(reasonOf(decideNodeCertificate(request, mac, undefined, sa))).toBe("NodeNotFound");
    expect(reasonOf(decideNodeCertificate({ ...request, signatureValid: false }, mac, node, sa))).toBe("BadSignature");
    expect(reasonOf(decideNodeCertificate({ ...request, commonName: "pomona-node:mac2" }, mac, node, sa))).toBe(
      "WrongCommonName",
    );
    expect(
      reasonOf(decideNodeCertificate({ ...request, altNames: [{ type: "ip", value: "10.0.0.6" }] }, mac, node, sa)),
    ).toBe("AddressNotRegistered");
    expect(reasonOf(decideNodeCertificate({ ...request, otherAltNames: 1 }, mac, node, sa))).toBe("UnsupportedName");
    const plainNode = { ...node, metadata: { name: "mac1", labels: {} } };
    expect(reasonOf(decideNodeCertificate(request, mac, plainNode, sa))).toBe("NotAnInferenceNode");
  });
});
