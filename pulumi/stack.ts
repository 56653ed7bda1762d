/**
 * PomonaStack: the whole of Pomona in one cluster — namespace, CRDs, RBAC, operator, gateway, node-agent
 * DaemonSet, node token and the optional Redis, HPA, Ingress and ServiceMonitor — as one component.
 */
import { randomBytes } from "node:crypto";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { nodeTokenSecret } from "../crds/api/well-known.ts";
import { gatewayUrl } from "./manifests/gateway.ts";
import { adminKeyName, componentObjects, crdObjects, type KubeObject, namespaceObject } from "./manifests/index.ts";
import { partOf } from "./manifests/object.ts";
import { type PomonaSettings, type PomonaSettingsInput, parseSettings } from "./settings.ts";

export interface PomonaStackArgs {
  /** Any part of the settings; the rest takes the defaults of pulumi/settings.ts. */
  settings?: PomonaSettingsInput;
  /** Installs the CRDs from crds/ (default); leave out when another tool owns them. */
  installCrds?: boolean;
  /**
   * Marks every object `pulumi.com/skipAwait: "true"`, so `pulumi up` does not wait for Pods to become
   * ready or Services to get endpoints. Only for an API server without kubelets (the tests'); off by default.
   */
  skipAwait?: boolean;
}

type ResourceConstructor = new (
  name: string,
  args: Record<string, unknown>,
  opts?: pulumi.CustomResourceOptions,
) => pulumi.CustomResource;

/** The typed Pulumi resource for each built-in kind; other kinds (ApiKey, ServiceMonitor) are CustomResources. */
const constructors: Record<string, unknown> = {
  "v1/Namespace": k8s.core.v1.Namespace,
  "v1/ServiceAccount": k8s.core.v1.ServiceAccount,
  "v1/Service": k8s.core.v1.Service,
  "v1/Secret": k8s.core.v1.Secret,
  "apps/v1/Deployment": k8s.apps.v1.Deployment,
  "apps/v1/DaemonSet": k8s.apps.v1.DaemonSet,
  "policy/v1/PodDisruptionBudget": k8s.policy.v1.PodDisruptionBudget,
  "autoscaling/v2/HorizontalPodAutoscaler": k8s.autoscaling.v2.HorizontalPodAutoscaler,
  "networking.k8s.io/v1/Ingress": k8s.networking.v1.Ingress,
  "rbac.authorization.k8s.io/v1/ClusterRole": k8s.rbac.v1.ClusterRole,
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": k8s.rbac.v1.ClusterRoleBinding,
  "rbac.authorization.k8s.io/v1/Role": k8s.rbac.v1.Role,
  "rbac.authorization.k8s.io/v1/RoleBinding": k8s.rbac.v1.RoleBinding,
  "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy": k8s.admissionregistration.v1.ValidatingAdmissionPolicy,
  "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding":
    k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding,
  "apiextensions.k8s.io/v1/CustomResourceDefinition": k8s.apiextensions.v1.CustomResourceDefinition,
};

/** A Pulumi name unique in the stack: kind, namespace and name. */
function logicalName(object: KubeObject): string {
  const { namespace, name } = object.metadata;
  return [object.kind.toLowerCase(), namespace, name].filter(Boolean).join("-");
}

/** The Kubernetes provider's switch for its readiness waits, on one object. */
function withSkipAwait(object: KubeObject): KubeObject {
  const annotations = { ...object.metadata.annotations, "pulumi.com/skipAwait": "true" };
  return { ...object, metadata: { ...object.metadata, annotations } };
}

export class PomonaStack extends pulumi.ComponentResource {
  readonly namespace: pulumi.Output<string>;
  /** The OpenAI-compatible base URL: the Ingress host when enabled, else the Service inside the cluster. */
  readonly gatewayUrl: pulumi.Output<string>;
  /** A command printing the admin key the operator minted. */
  readonly adminKeyCommand: pulumi.Output<string>;
  readonly settings: PomonaSettings;
  /** Every Kubernetes object of the stack, so a caller can depend on all of it. */
  readonly resources: pulumi.CustomResource[] = [];

  constructor(name: string, args: PomonaStackArgs = {}, opts?: pulumi.ComponentResourceOptions) {
    // Bad settings stop the program before the component is registered, so Pulumi reports only their error.
    const settings = parseSettings(args.settings);
    super("pomona:index:PomonaStack", name, {}, opts);
    this.settings = settings;

    const create = (plain: KubeObject, extra: pulumi.CustomResourceOptions = {}) => {
      const object = args.skipAwait ? withSkipAwait(plain) : plain;
      const key = `${object.apiVersion}/${object.kind}`;
      const options = { parent: this, ...extra };
      const Typed = constructors[key] as ResourceConstructor | undefined;
      const resource = Typed
        ? new Typed(logicalName(object), object, options)
        : new k8s.apiextensions.CustomResource(logicalName(object), object, options);
      this.resources.push(resource);
      return resource;
    };

    const namespace = create(namespaceObject(settings));
    const crds = args.installCrds === false ? [] : crdObjects().map((crd) => create(crd));
    const after = { dependsOn: [namespace, ...crds] };

    // Chosen once: later updates keep the first value, so agents and gateways keep agreeing.
    const tokenSecret: KubeObject = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: nodeTokenSecret, namespace: settings.namespace, labels: partOf },
      type: "Opaque",
      stringData: { token: pulumi.secret(randomBytes(32).toString("base64url")) },
    };
    create(tokenSecret, { ...after, ignoreChanges: ["stringData", "data"], additionalSecretOutputs: ["data"] });
    for (const object of componentObjects(settings)) create(object, after);

    this.namespace = pulumi.output(namespace.id).apply(() => settings.namespace);
    this.gatewayUrl = pulumi.output(gatewayUrl(settings));
    this.adminKeyCommand = pulumi.output(
      settings.adminKey.enabled
        ? `kubectl -n ${settings.namespace} get secret ${adminKeyName} -o jsonpath='{.data.key}' | base64 -d`
        : `apply an ApiKey (examples/api-key.yaml), then: kubectl -n <namespace> get secret <name> -o jsonpath='{.data.key}' | base64 -d`,
    );
    this.registerOutputs({
      namespace: this.namespace,
      gatewayUrl: this.gatewayUrl,
      adminKeyCommand: this.adminKeyCommand,
    });
  }
}
