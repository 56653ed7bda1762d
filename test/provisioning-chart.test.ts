// The Helm chart against the real API server: its CRDs match crds/, every object it renders passes the
// server's validation, and `helm install` then `helm upgrade` work and keep the node token.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, test } from "vitest";
import { chartCrdDir, crdFiles } from "../charts/copy-crds.ts";
import { valuesSchema, valuesSchemaPath } from "../charts/values-schema.ts";
import { nodeFlagsFor, nodeTokenSecret } from "../crds/api/well-known.ts";
import { chartDir, everyOption, helm, renderChart } from "./provisioning-support.ts";
import { installCrds, repoRoot } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";

const namespace = "pomona-chart";
/** What helm says when the schema's shared-limits rule refuses the values. */
const SHARED_LIMITS_REFUSAL = /at '\/redis\/enabled': value must be true/;
const yamlOf = (objects: unknown[]) => objects.map((o) => JSON.stringify(o)).join("\n---\n");

/** What `helm lint` reports for these extra arguments (it fails with its findings on stdout). */
function lintOutput(args: string[]): string {
  try {
    return helm(["lint", chartDir, "--strict", "--namespace", namespace, ...args]);
  } catch (err) {
    const { stdout, stderr } = err as { stdout?: string; stderr?: string };
    return `${stdout ?? ""}${stderr ?? ""}`;
  }
}

describe("the Pomona Helm chart", () => {
  beforeAll(async () => {
    await installCrds();
    await kubectlOk(["create", "namespace", namespace]);
  });

  afterAll(async () => {
    await kubectl(["delete", "namespace", namespace, "--wait=false"]);
  });

  test("its crds/ folder holds byte-for-byte copies of crds/*.yaml (run `npm run generate` after changing the API)", () => {
    const source = crdFiles();
    expect(source.size).toBe(4);
    expect(crdFiles(chartCrdDir)).toEqual(source);
  });

  test("its values.schema.json is the one generated from pulumi/settings.ts (run `npm run generate`)", () => {
    expect(JSON.parse(readFileSync(valuesSchemaPath, "utf8"))).toEqual(valuesSchema());
  });

  test("helm lint passes and values.schema.json refuses a misspelt value", () => {
    expect(helm(["lint", chartDir, "--strict", "--namespace", namespace])).toContain("0 chart(s) failed");
    expect(() => renderChart({}, ["--set", "gateway.replica=3"])).toThrow(/additional properties 'replica'/);
    expect(() => renderChart({}, ["--set", "gateway.limitsOnRedisFailure=maybe"])).toThrow(/limitsOnRedisFailure/);
  });

  test("limits cannot multiply: values.schema.json refuses more than one gateway replica without Redis", () => {
    const refusals = [
      ["--set", "redis.enabled=false"],
      ["--set", "redis.enabled=false", "--set", "gateway.replicas=3"],
      ["--set", "redis.enabled=false", "--set", "gateway.replicas=1", "--set", "gateway.autoscaling.enabled=true"],
    ];
    for (const args of refusals) {
      expect(() => renderChart({}, args)).toThrow(SHARED_LIMITS_REFUSAL);
      expect(lintOutput(args)).toMatch(SHARED_LIMITS_REFUSAL);
    }
    // The default install: two gateways sharing their limits through the chart's Redis.
    const defaults = renderChart({ namespace });
    const gateway = defaults.find((o) => o.kind === "Deployment" && o.metadata.name === "pomona-gateway")!;
    const spec = gateway.spec as {
      replicas: number;
      template: { spec: { containers: { env: { name: string }[] }[] } };
    };
    expect(spec.replicas).toBe(2);
    expect(spec.template.spec.containers[0]!.env.map((e) => e.name)).toContain("POMONA_REDIS_URL");
    expect(defaults.some((o) => o.kind === "Deployment" && o.metadata.name === "pomona-redis")).toBe(true);
    // One gateway without Redis is allowed: it keeps its limits in memory.
    const single = renderChart({ namespace, redis: { enabled: false }, gateway: { replicas: 1 } });
    expect(single.some((o) => o.metadata.name === "pomona-redis")).toBe(false);
  });

  test("every object rendered with every option is accepted by the API server's dry run", async () => {
    const objects = renderChart({ ...everyOption, namespace });
    const kinds = new Set(objects.map((o) => o.kind));
    for (const kind of ["HorizontalPodAutoscaler", "Ingress", "DaemonSet", "ValidatingAdmissionPolicy", "ApiKey"]) {
      expect(kinds).toContain(kind);
    }
    const out = await kubectlOk(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], yamlOf(objects));
    expect(out.trim().split("\n")).toHaveLength(objects.length);
  });

  test("the dry run refuses a misspelt field, so it would catch a typo in a template", async () => {
    const objects = renderChart({ namespace });
    const deployment = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "pomona-gateway")!;
    const spec = deployment.spec as { template: { spec: { containers: Record<string, unknown>[] } } };
    spec.template.spec.containers[0]!.imagePullPolicyy = "Always";
    const result = await kubectl(["apply", "--dry-run=server", "--validate=strict", "-f", "-"], yamlOf([deployment]));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('unknown field "spec.template.spec.containers[0].imagePullPolicyy"');
  });

  test("every variable the chart sets for a component is one docs/components.md documents for it", () => {
    const contract = readFileSync(join(repoRoot, "docs/components.md"), "utf8");
    const tableOf = (heading: string) => {
      const start = contract.indexOf(`## ${heading} (`);
      expect(start, `docs/components.md has a section for ${heading}`).toBeGreaterThan(-1);
      return contract.slice(start, contract.indexOf("\n## ", start + 1));
    };
    const workloads = renderChart({ ...everyOption, namespace }).filter(
      (o) => (o.kind === "Deployment" || o.kind === "DaemonSet") && o.metadata.name !== "pomona-redis",
    );
    expect(workloads).toHaveLength(3);
    for (const workload of workloads) {
      const component = workload.metadata.name.replace(/^pomona-/, "");
      const spec = workload.spec as { template: { spec: { containers: { env: { name: string }[] }[] } } };
      const names = spec.template.spec.containers[0]!.env.map((e) => e.name).filter((n) => n.startsWith("POMONA_"));
      expect(names.length).toBeGreaterThan(2);
      const table = tableOf(component);
      for (const name of names) expect(table, `${name} for the ${component}`).toContain(`\`${name}\``);
    }
  });

  test("each component's command carries the Node flags Pomona gives its main script (crds/api/well-known.ts)", () => {
    const workloads = renderChart({ ...everyOption, namespace }).filter(
      (o) => (o.kind === "Deployment" || o.kind === "DaemonSet") && o.metadata.name !== "pomona-redis",
    );
    expect(workloads).toHaveLength(3);
    for (const workload of workloads) {
      const spec = workload.spec as { template: { spec: { containers: { command: string[] }[] } } };
      const command = spec.template.spec.containers[0]!.command;
      const main = command.at(-1) ?? "";
      expect(command, workload.metadata.name).toEqual(["node", ...nodeFlagsFor(main), main]);
    }
  });

  test("metrics and probes are on the gateway's internal port, which the client-facing Service and Ingress never route to", () => {
    const objects = renderChart({ ...everyOption, namespace, serviceMonitor: { enabled: true } });
    const find = (kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name)!;
    type Container = {
      ports: { name: string; containerPort: number }[];
      livenessProbe: { httpGet: { port: string } };
      readinessProbe: { httpGet: { port: string } };
    };
    const gateway = (find("Deployment", "pomona-gateway").spec as { template: { spec: { containers: Container[] } } })
      .template.spec.containers[0]!;
    expect(gateway.ports).toEqual([
      { name: "http", containerPort: 8080 },
      { name: "admin", containerPort: 9090 },
    ]);
    expect([gateway.livenessProbe.httpGet.port, gateway.readinessProbe.httpGet.port]).toEqual(["admin", "admin"]);
    const targets = (name: string) =>
      (find("Service", name).spec as { ports: { targetPort: string }[] }).ports.map((p) => p.targetPort);
    expect(targets("pomona-gateway")).toEqual(["http"]);
    expect(targets("pomona-gateway-admin")).toEqual(["admin"]);
    const ingress = JSON.stringify(find("Ingress", "pomona-gateway").spec);
    expect(ingress).toContain('"name":"pomona-gateway"');
    expect(ingress).not.toContain("admin");
    // The ServiceMonitor selects the internal Service (by its listener label) and scrapes its admin port.
    const monitor = find("ServiceMonitor", "pomona-gateway").spec as {
      selector: { matchLabels: Record<string, string> };
      endpoints: { port: string; path: string }[];
    };
    expect(monitor.endpoints).toEqual([expect.objectContaining({ port: "admin", path: "/metrics" })]);
    const selected = objects.filter(
      (o) =>
        o.kind === "Service" &&
        Object.entries(monitor.selector.matchLabels).every(([k, v]) => o.metadata.labels?.[k] === v),
    );
    expect(selected.map((o) => o.metadata.name)).toEqual(["pomona-gateway-admin"]);
  });

  test("helm install, then upgrade, keeps the random node token and NOTES tell how to reach the gateway", async () => {
    const kubeconfig = inject("kubeconfig");
    const dir = mkdtempSync(join(tmpdir(), "pomona-helm-"));
    const env = ["--kubeconfig", kubeconfig, "--namespace", namespace];
    try {
      const installed = helm(["install", "pomona", chartDir, ...env, "--set", "gateway.service.type=NodePort"]);
      expect(installed).toContain("STATUS: deployed");
      expect(installed).toMatch(/http:\/\/<any node address>:.*\/v1/);
      expect(installed).toContain(`kubectl -n ${namespace} get secret pomona-admin -o jsonpath='{.data.key}'`);

      const readToken = () =>
        kubectlOk(["-n", namespace, "get", "secret", nodeTokenSecret, "-o", "jsonpath={.data.token}"]);
      const token = Buffer.from(await readToken(), "base64").toString();
      expect(token).toMatch(/^[A-Za-z0-9]{48}$/);
      // The token is a credential: helm's own output must not carry it.
      expect(installed).not.toContain(token);

      writeFileSync(join(dir, "values.json"), JSON.stringify({ redis: { enabled: true } }));
      helm(["upgrade", "pomona", chartDir, ...env, "-f", join(dir, "values.json")]);
      expect(Buffer.from(await readToken(), "base64").toString()).toBe(token);
      const gatewayEnv = await kubectlOk([
        "-n",
        namespace,
        "get",
        "deploy/pomona-gateway",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name=='POMONA_REDIS_URL')].value}",
      ]);
      expect(gatewayEnv).toBe(`redis://pomona-redis.${namespace}.svc:6379`);
      // The CRDs come from the chart's crds/ folder; helm leaves them in place, as it does for every chart.
      await kubectlOk(["get", "crd", "modelreplicas.pomona.dev"]);
    } finally {
      helm(["uninstall", "pomona", ...env]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
