/** Every object of a Pomona stack as plain data, but the node token, whose value only the stack may choose. */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import type { PomonaSettings } from "../settings.ts";
import { nodeAgentAdmissionObjects } from "./admission.ts";
import { gatewayObjects } from "./gateway.ts";
import { nodeAgentObjects } from "./node-agent.ts";
import { componentLabels, type KubeObject, partOf } from "./object.ts";
import { operatorObjects } from "./operator.ts";
import { rbacObjects } from "./rbac.ts";
import { redisObjects } from "./redis.ts";

export type { KubeObject } from "./object.ts";

const crdDir = join(import.meta.dirname, "..", "..", "crds");

/** The CRDs exactly as committed in crds/ (rendered from crds/api by `npm run generate`). */
export function crdObjects(): KubeObject[] {
  return readdirSync(crdDir)
    .filter((name) => name.endsWith(".yaml"))
    .sort()
    .map((name) => parse(readFileSync(join(crdDir, name), "utf8")) as KubeObject);
}

export function namespaceObject(settings: PomonaSettings): KubeObject {
  return { apiVersion: "v1", kind: "Namespace", metadata: { name: settings.namespace, labels: partOf } };
}

/** The admin ApiKey: the operator mints its key into the Secret of the same name. */
export const adminKeyName = "pomona-admin";

function adminKey(settings: PomonaSettings): KubeObject[] {
  if (!settings.adminKey.enabled) return [];
  return [
    {
      apiVersion: "pomona.dev/v1alpha1",
      kind: "ApiKey",
      metadata: { name: adminKeyName, namespace: settings.namespace, labels: componentLabels("operator") },
      spec: { owner: settings.adminKey.owner },
    },
  ];
}

/** The namespaced and cluster objects the components need, once the namespace and CRDs exist. */
export function componentObjects(settings: PomonaSettings): KubeObject[] {
  return [
    ...rbacObjects(settings),
    ...nodeAgentAdmissionObjects(settings),
    ...operatorObjects(settings),
    ...gatewayObjects(settings),
    ...nodeAgentObjects(settings),
    ...redisObjects(settings),
    ...adminKey(settings),
  ];
}
