// What the provisioning tests share: the chart rendered by a real helm, and the Pulumi program run with mocks.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { parseAllDocuments } from "yaml";
import { ensureHelm } from "../controlplane/helm.ts";
import type { KubeObject } from "../pulumi/manifests/index.ts";
import type { PomonaSettingsInput } from "../pulumi/settings.ts";
import { PomonaStack, type PomonaStackArgs } from "../pulumi/stack.ts";
import { repoRoot } from "./support/crds.ts";

export const chartDir = join(repoRoot, "charts", "pomona");

export function helm(args: string[]): string {
  return execFileSync(ensureHelm(), args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Chart values for stack settings: the values mirror the settings, but the namespace is the release's. */
export function valuesOf(settings: PomonaSettingsInput): Record<string, unknown> {
  const { namespace: _namespace, ...values } = settings;
  return values;
}

export function parseObjects(text: string): KubeObject[] {
  return parseAllDocuments(text)
    .map((doc) => doc.toJS() as KubeObject | null)
    .filter((object): object is KubeObject => object !== null);
}

/** `helm template` of the chart for these settings; CRDs included, as `helm install` applies them. */
export function renderChart(settings: PomonaSettingsInput = {}, extraArgs: string[] = []): KubeObject[] {
  const dir = mkdtempSync(join(tmpdir(), "pomona-values-"));
  try {
    const valuesFile = join(dir, "values.json");
    writeFileSync(valuesFile, JSON.stringify(valuesOf(settings)));
    const namespace = settings.namespace ?? "pomona-system";
    return parseObjects(
      helm([
        "template",
        "pomona",
        chartDir,
        "--namespace",
        namespace,
        "--include-crds",
        "-f",
        valuesFile,
        ...extraArgs,
      ]),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface PulumiRun {
  objects: KubeObject[];
  outputs: { namespace: string; gatewayUrl: string; adminKeyCommand: string };
}

export const settled = <T>(output: pulumi.Output<T>) => new Promise<T>((resolve) => output.apply(resolve));

/** Pulumi's mocks for a stack of project pomona: the list fills with each Kubernetes object as the provider would get it. */
export async function mockPulumi(stack: string): Promise<KubeObject[]> {
  const objects: KubeObject[] = [];
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        if (args.type.startsWith("kubernetes:")) objects.push(args.inputs as KubeObject);
        return { id: `${args.name}-id`, state: args.inputs };
      },
      call: (args) => args.inputs,
    },
    "pomona",
    stack,
    false,
  );
  return objects;
}

/** Runs PomonaStack under Pulumi's mocks and returns every Kubernetes object it registered, as the provider would get it. */
export async function runPulumiProgram(
  settings: PomonaSettingsInput = {},
  args: Omit<PomonaStackArgs, "settings"> = {},
): Promise<PulumiRun> {
  const objects = await mockPulumi("test");
  const stack = new PomonaStack("pomona", { settings, ...args });
  await Promise.all(stack.resources.map((resource) => settled(resource.urn)));
  const outputs = {
    namespace: await settled(stack.namespace),
    gatewayUrl: await settled(stack.gatewayUrl),
    adminKeyCommand: await settled(stack.adminKeyCommand),
  };
  return { objects, outputs };
}

/** kind/namespace/name of each object, sorted: what two renderings must agree on. */
export function identities(objects: KubeObject[]): string[] {
  return objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`).sort();
}

/** Every option on: what the wide tests render. ServiceMonitor needs the Prometheus Operator's CRD. */
export const everyOption: PomonaSettingsInput = {
  imagePullSecrets: [{ name: "registry" }],
  redis: { enabled: true },
  gateway: {
    autoscaling: { enabled: true },
    ingress: { enabled: true, className: "nginx", tlsSecretName: "pomona-tls" },
    service: { type: "NodePort", nodePort: 30080 },
    trustedProxies: ["10.0.0.0/8", "fd00::/8"],
    corsOrigins: ["https://app.example.com", "http://localhost:5173"],
  },
  nodeAgent: { modelMemory: "6Gi" },
  modelSources: { allowedHosts: ["models.example.com", "*.cdn.example.com"] },
};
