/**
 * A node-agent Pod's service-account token names the node it runs on; the API server puts it in the
 * user's extra as authentication.kubernetes.io/node-name. This policy lets an agent write only its own
 * Node, its own node Lease and the ModelReplicas bound to its node, which RBAC alone cannot express.
 */
import { nodeNameExtra } from "../../crds/api/well-known.ts";
import type { PomonaSettings } from "../settings.ts";
import { componentLabels, type KubeObject } from "./object.ts";
import { serviceAccountUser } from "./rbac.ts";

export const nodeAgentPolicyName = "pomona-node-agent-own-node";

export function nodeAgentAdmissionObjects(settings: PomonaSettings): KubeObject[] {
  if (!settings.nodeAgent.enabled) return [];
  const metadata = { name: nodeAgentPolicyName, labels: componentLabels("node-agent") };
  const writes = ["CREATE", "UPDATE", "DELETE"];
  return [
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicy",
      metadata,
      spec: {
        failurePolicy: "Fail",
        matchConstraints: {
          resourceRules: [
            {
              apiGroups: ["pomona.dev"],
              apiVersions: ["*"],
              resources: ["modelreplicas", "modelreplicas/status"],
              operations: writes,
            },
            { apiGroups: [""], apiVersions: ["*"], resources: ["nodes", "nodes/status"], operations: writes },
            { apiGroups: ["coordination.k8s.io"], apiVersions: ["*"], resources: ["leases"], operations: writes },
          ],
        },
        matchConditions: [
          {
            name: "is-node-agent",
            expression: `request.userInfo.username == '${serviceAccountUser(settings.namespace, "node-agent")}'`,
          },
        ],
        variables: [
          {
            name: "ownNode",
            // A user without any extra has no extra field at all, hence has() first.
            expression: `has(request.userInfo.extra) && '${nodeNameExtra}' in request.userInfo.extra ? request.userInfo.extra['${nodeNameExtra}'][0] : ''`,
          },
          { name: "target", expression: "object != null ? object : oldObject" },
          {
            name: "targetNode",
            expression:
              "request.resource.resource == 'modelreplicas' ? variables.target.spec.nodeName : variables.target.metadata.name",
          },
        ],
        validations: [
          {
            expression: "variables.ownNode != '' && variables.targetNode == variables.ownNode",
            messageExpression:
              "variables.ownNode == '' ? 'the node-agent must authenticate with a token bound to its node' : 'the node-agent of node ' + variables.ownNode + ' may not write objects of node ' + variables.targetNode",
            reason: "Forbidden",
          },
        ],
      },
    },
    {
      apiVersion: "admissionregistration.k8s.io/v1",
      kind: "ValidatingAdmissionPolicyBinding",
      metadata,
      spec: { policyName: nodeAgentPolicyName, validationActions: ["Deny"] },
    },
  ];
}
