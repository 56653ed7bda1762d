// The Pulumi program under Pulumi's mocks: the objects it registers, its outputs, the secrecy of the node
// token, the same objects and specs as the Helm chart for the same settings, and the server's dry run.
// biome-ignore-all lint/suspicious/noExplicitAny: the checks read deep into manifests that are plain data.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, describe, expect, test } from "vitest";
import { parse } from "yaml";
import { nodeTokenSecret } from "../crds/api/well-known.ts";
import type { KubeObject } from "../pulumi/manifests/index.ts";
import { type PomonaSettingsInput, parseSettings } from "../pulumi/settings.ts";
import {
  chartDir,
  everyOption,
  identities,
  mockPulumi,
  renderChart,
  runPulumiProgram,
  settled,
  valuesOf,
} from "./provisioning-support.ts";
import { installCrds } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";

/** Pulumi's serialized form of a secret value. */
const secretSignature = "4dabf18193072939515e22adb298388d";

function revealSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(revealSecrets);
  if (value === null || typeof value !== "object") return value;
  const record = value as Record<string, unknown>;
  if (secretSignature in record) return revealSecrets(record.value);
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, revealSecrets(v)]));
}

const find = (objects: KubeObject[], kind: string, name: string) => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name}`);
  return found as KubeObject & { spec: Record<string, any> };
};

const containerOf = (o: KubeObject) => (o as any).spec.template.spec.containers[0];
const envOf = (o: KubeObject) =>
  Object.fromEntries(containerOf(o).env.map((e: any) => [e.name, e.value ?? e.valueFrom.fieldRef.fieldPath]));

/** A spec with the Pod template's labels left out: the tools label differently (helm.sh/chart, managed-by). */
function comparableSpec(o: KubeObject): unknown {
  const copy = structuredClone(o) as any;
  if (copy.spec?.template?.metadata) delete copy.spec.template.metadata;
  return { spec: copy.spec, rules: copy.rules, roleRef: copy.roleRef, subjects: copy.subjects, type: copy.type };
}

describe("the Pulumi program", () => {
  test("registers the stack's objects with the documented contract for each component", async () => {
    const { objects, outputs } = await runPulumiProgram();
    expect(outputs).toEqual({
      namespace: "pomona-system",
      gatewayUrl: "http://pomona-gateway.pomona-system.svc:8080/v1",
      adminKeyCommand: "kubectl -n pomona-system get secret pomona-admin -o jsonpath='{.data.key}' | base64 -d",
    });
    const operator = find(objects, "Deployment", "pomona-operator");
    expect(operator.spec.replicas).toBe(2);
    expect(containerOf(operator).command).toEqual(["node", "--max-semi-space-size=2", "operator/main.ts"]);
    expect(envOf(operator)).toMatchObject({
      POMONA_NAMESPACE: "metadata.namespace",
      POMONA_OPERATOR_ID: "metadata.name",
    });

    const agent = find(objects, "DaemonSet", "pomona-node-agent");
    expect(agent.spec.template.spec.nodeSelector).toEqual({
      "pomona.dev/inference-node": "true",
      "kubernetes.io/os": "linux",
    });
    expect(envOf(agent)).toMatchObject({
      POMONA_NODE_MODE: "attached",
      POMONA_NODE_NAME: "spec.nodeName",
      POMONA_NODE_TOKEN_FILE: "/var/run/pomona/node-token/token",
    });

    const gateway = find(objects, "Deployment", "pomona-gateway");
    // Two gateway replicas by default, so Redis is on by default and they share their limits.
    expect(gateway.spec.replicas).toBe(2);
    expect(containerOf(gateway).command).toEqual(["node", "--initial-old-space-size=128", "gateway/main.ts"]);
    expect(envOf(gateway).POMONA_REDIS_URL).toBe("redis://pomona-redis.pomona-system.svc:6379");
    find(objects, "Deployment", "pomona-redis");
    expect(gateway.spec.template.spec.volumes).toEqual([
      { name: "node-token", secret: { secretName: nodeTokenSecret } },
    ]);
    expect(find(objects, "PodDisruptionBudget", "pomona-gateway").spec.minAvailable).toBe(1);
    expect(objects.filter((o) => o.kind === "CustomResourceDefinition")).toHaveLength(4);
    expect(objects.some((o) => ["HorizontalPodAutoscaler", "Ingress", "ServiceMonitor"].includes(o.kind))).toBe(false);
  });

  test("the node token is random, a Pulumi secret, and in no output", async () => {
    const tokenOf = async () => {
      const run = await runPulumiProgram();
      const secret = find(run.objects, "Secret", nodeTokenSecret) as any;
      // Pulumi wraps the whole stringData as a secret, so state and previews show it encrypted or hidden.
      expect(secret.stringData).toHaveProperty(secretSignature);
      const token = (revealSecrets(secret) as any).stringData.token as string;
      expect(JSON.stringify(run.outputs)).not.toContain(token);
      return token;
    };
    const first = await tokenOf();
    expect(first).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await tokenOf()).not.toBe(first);
  });

  test("options add Redis (and point the gateway at it), an HPA that owns the replica count, an Ingress and a ServiceMonitor", async () => {
    const { objects, outputs } = await runPulumiProgram({ ...everyOption, serviceMonitor: { enabled: true } });
    const gateway = find(objects, "Deployment", "pomona-gateway");
    expect(envOf(gateway).POMONA_REDIS_URL).toBe("redis://pomona-redis.pomona-system.svc:6379");
    find(objects, "Service", "pomona-redis");
    expect(gateway.spec).not.toHaveProperty("replicas");
    expect(find(objects, "HorizontalPodAutoscaler", "pomona-gateway").spec.maxReplicas).toBe(10);
    expect(find(objects, "Ingress", "pomona-gateway").spec.tls).toEqual([
      { hosts: ["pomona.example.com"], secretName: "pomona-tls" },
    ]);
    find(objects, "ServiceMonitor", "pomona-gateway");
    expect(outputs.gatewayUrl).toBe("https://pomona.example.com/v1");
  });

  test("limits cannot multiply: more than one gateway replica without Redis stops the program before any resource", async () => {
    const refusals: PomonaSettingsInput[] = [
      { redis: { enabled: false } },
      { redis: { enabled: false }, gateway: { replicas: 3 } },
      { redis: { enabled: false }, gateway: { replicas: 1, autoscaling: { enabled: true } } },
    ];
    for (const settings of refusals) {
      expect(() => parseSettings(settings)).toThrow(/more than one gateway replica needs redis\.enabled=true/);
      await expect(runPulumiProgram(settings)).rejects.toThrow(/every per-key limit is multiplied/);
    }
    // One gateway keeps its limits in memory: allowed, and no Redis is deployed or named.
    const { objects } = await runPulumiProgram({ redis: { enabled: false }, gateway: { replicas: 1 } });
    const gateway = find(objects, "Deployment", "pomona-gateway");
    expect(gateway.spec.replicas).toBe(1);
    expect(envOf(gateway)).not.toHaveProperty("POMONA_REDIS_URL");
    expect(objects.some((o) => o.metadata.name === "pomona-redis")).toBe(false);
  });

  test("skipAwait marks every object pulumi.com/skipAwait, and only when asked", async () => {
    const skipping = await runPulumiProgram({}, { skipAwait: true });
    expect(skipping.objects.length).toBeGreaterThan(20);
    for (const object of skipping.objects) {
      expect(object.metadata.annotations?.["pulumi.com/skipAwait"], object.metadata.name).toBe("true");
    }
    const waiting = await runPulumiProgram();
    expect(waiting.objects.filter((o) => o.metadata.annotations?.["pulumi.com/skipAwait"])).toEqual([]);
  });

  test("settings are checked at the edge: a bad value stops the program before any resource", () => {
    expect(() => parseSettings({ gateway: { replicas: 0 } })).toThrow(/replicas/);
    expect(() => parseSettings({ nodeAgent: { cacheHostPath: "relative/path" } } as PomonaSettingsInput)).toThrow();
    expect(parseSettings({ gateway: { replicas: 5 } }).gateway.autoscaling.maxReplicas).toBe(10);
  });
});

describe("the Pulumi program's entry point", () => {
  test("reads the pomona:* config keys, as `pulumi config set --path` writes them, into the stack", async () => {
    const objects = await mockPulumi("config");
    pulumi.runtime.setConfig("pomona:namespace", "llm");
    pulumi.runtime.setConfig("pomona:gateway", JSON.stringify({ replicas: 3, service: { type: "LoadBalancer" } }));
    pulumi.runtime.setConfig("pomona:redis", JSON.stringify({ enabled: true }));
    pulumi.runtime.setConfig("pomona:installCrds", "false");
    const program = await import("../pulumi/index.ts");
    expect(await settled(program.namespace)).toBe("llm");
    expect(await settled(program.gatewayUrl)).toBe("http://pomona-gateway.llm.svc:8080/v1");
    // The same objects as the chart for these settings, but the CRDs (installCrds=false) and plus the namespace.
    const settings = {
      namespace: "llm",
      gateway: { replicas: 3, service: { type: "LoadBalancer" as const } },
      redis: { enabled: true },
    };
    const expected = identities([
      ...renderChart(settings).filter((o) => o.kind !== "CustomResourceDefinition"),
      { apiVersion: "v1", kind: "Namespace", metadata: { name: "llm" } },
    ]);
    // The entry point exports only outputs, not its resources, and registrations land one by one: Pulumi's
    // own end of a program, its RPC queue drained (the disconnect; the next setMocks starts afresh), says
    // every registration has reached the mocks.
    await pulumi.runtime.disconnect();
    expect(identities(objects)).toEqual(expected);
    const gateway = find(objects, "Deployment", "pomona-gateway");
    expect(gateway.metadata.namespace).toBe("llm");
    expect(gateway.spec.replicas).toBe(3);
    expect(find(objects, "Service", "pomona-gateway").spec.type).toBe("LoadBalancer");
    expect(envOf(gateway).POMONA_REDIS_URL).toBe("redis://pomona-redis.llm.svc:6379");
    expect(objects.some((o) => o.kind === "CustomResourceDefinition")).toBe(false);
  });
});

describe("Pulumi and Helm produce the same stack", () => {
  const cases: [string, PomonaSettingsInput][] = [
    ["defaults", {}],
    ["every option", { ...everyOption, serviceMonitor: { enabled: true } }],
    [
      "no node-agent, another namespace",
      { namespace: "llm", nodeAgent: { enabled: false }, adminKey: { enabled: false } },
    ],
    // A Role for Secrets in each served namespace, the release's named once even when listed again.
    ["served namespaces", { operator: { watchNamespaces: ["team-a", "pomona-system", "team-b"] } }],
  ];

  test("values.yaml holds the defaults of pulumi/settings.ts", () => {
    const values = parse(readFileSync(join(chartDir, "values.yaml"), "utf8")) as any;
    const defaults = valuesOf(parseSettings()) as any;
    expect(values).toEqual(defaults);
  });

  test("an unset image tag means the same release in both: the chart's appVersion is package.json's version", () => {
    const chart = parse(readFileSync(join(chartDir, "Chart.yaml"), "utf8")) as { appVersion: string };
    const pkg = JSON.parse(readFileSync(join(chartDir, "..", "..", "package.json"), "utf8")) as { version: string };
    expect(chart.appVersion).toBe(pkg.version);
  });

  for (const [label, settings] of cases) {
    test(`same objects (kind/namespace/name) and the same specs and rules: ${label}`, async () => {
      const { objects } = await runPulumiProgram(settings);
      const chart = renderChart(settings);
      // The chart leaves the namespace to `helm install --create-namespace`; Pulumi owns it.
      const pulumiObjects = objects.filter((o) => o.kind !== "Namespace");
      expect(identities(pulumiObjects)).toEqual(identities(chart));
      for (const object of pulumiObjects) {
        if (object.kind === "Secret" || object.kind === "CustomResourceDefinition") continue;
        const twin = chart.find(
          (o) =>
            o.kind === object.kind &&
            o.metadata.name === object.metadata.name &&
            o.metadata.namespace === object.metadata.namespace,
        )!;
        expect(comparableSpec(object), `${object.kind} ${object.metadata.name}`).toEqual(comparableSpec(twin));
      }
      const crdSpecs = (list: KubeObject[]) =>
        Object.fromEntries(
          list.filter((o) => o.kind === "CustomResourceDefinition").map((o) => [o.metadata.name, o.spec]),
        );
      expect(crdSpecs(pulumiObjects)).toEqual(crdSpecs(chart));
    });
  }
});

describe("the Pulumi program's objects on the API server", () => {
  const namespace = "pomona-pulumi";
  beforeAll(async () => {
    await installCrds();
  });

  test("every object it registers passes the server's dry run", async () => {
    const { objects } = await runPulumiProgram({ ...everyOption, namespace });
    const [ns, ...rest] = objects.map((o) => revealSecrets(o) as KubeObject);
    expect(ns?.kind).toBe("Namespace");
    await kubectlOk(["apply", "-f", "-"], JSON.stringify(ns));
    try {
      const out = await kubectlOk(
        ["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
        rest.map((o) => JSON.stringify(o)).join("\n---\n"),
      );
      expect(out.trim().split("\n")).toHaveLength(rest.length);
    } finally {
      await kubectl(["delete", "namespace", namespace, "--wait=false"]);
    }
  });
});
