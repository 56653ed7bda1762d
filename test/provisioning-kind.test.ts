// What can be checked of the laptop path without a Docker engine: kind-config.yaml, the scripts' syntax,
// that the script's helm settings and the cluster agree, and that the image holds every file the
// components import.
import { execFileSync } from "node:child_process";
import { accessSync, constants, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, test } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { nodeFlagsFor } from "../crds/api/well-known.ts";
import { parseSettings } from "../pulumi/settings.ts";
import { renderChart } from "./provisioning-support.ts";
import { repoRoot } from "./support/crds.ts";

interface KindNode {
  role: string;
  labels?: Record<string, string>;
  extraPortMappings?: { containerPort: number; hostPort: number; listenAddress?: string }[];
  extraMounts?: { hostPath: string; containerPath: string }[];
}

const read = (path: string) => readFileSync(join(repoRoot, path), "utf8");
const kindConfig = parse(read("kind-config.yaml")) as { kind: string; apiVersion: string; nodes: KindNode[] };
const kindUp = read("scripts/kind-up.sh");
const chartValues = parse(read("charts/pomona/values.yaml")) as { nodeAgent: { cacheHostPath: string } };

/** The `--set key=value` flags scripts/kind-up.sh passes to helm. */
function kindUpHelmSettings(): Map<string, string> {
  const settings = new Map<string, string>();
  for (const [, key, value] of kindUp.matchAll(/--set ([\w.]+)=("[^"]*"|\S+)/g)) settings.set(key!, value!);
  return settings;
}

describe("kind-config.yaml", () => {
  const workers = kindConfig.nodes.filter((n) => n.role === "worker");

  test("is a kind v1alpha4 cluster of one control plane and two CPU inference workers", () => {
    expect(kindConfig.kind).toBe("Cluster");
    expect(kindConfig.apiVersion).toBe("kind.x-k8s.io/v1alpha4");
    expect(kindConfig.nodes.map((n) => n.role)).toEqual(["control-plane", "worker", "worker"]);
    for (const worker of workers) {
      expect(worker.labels).toEqual({ "pomona.dev/inference-node": "true", "pomona.dev/accelerator": "cpu" });
    }
  });

  test("maps the gateway NodePort that kind-up installs to the host port the smoke request uses", () => {
    const settings = kindUpHelmSettings();
    expect(settings.get("gateway.service.type")).toBe("NodePort");
    const nodePort = Number(settings.get("gateway.service.nodePort"));
    const mapping = kindConfig.nodes[0]!.extraPortMappings?.find((m) => m.containerPort === nodePort);
    expect(mapping, `a port mapping for NodePort ${nodePort}`).toBeDefined();
    expect(mapping!.listenAddress).toBe("127.0.0.1");
    expect(kindUp).toContain(`gateway="http://127.0.0.1:${mapping!.hostPort}"`);
  });

  test("mounts a host folder per worker where the node-agent keeps its model cache", () => {
    const defaultCache = parseSettings().nodeAgent.cacheHostPath;
    expect(chartValues.nodeAgent.cacheHostPath).toBe(defaultCache);
    const hostPaths = workers.map((w) => {
      expect(w.extraMounts).toHaveLength(1);
      expect(w.extraMounts![0]!.containerPath).toBe(defaultCache);
      return w.extraMounts![0]!.hostPath;
    });
    expect(new Set(hostPaths).size).toBe(workers.length);
    // kind refuses to start when a mount's host folder is missing, so the script must create each one.
    for (const hostPath of hostPaths) expect(kindUp).toMatch(new RegExp(`mkdir -p[^\\n]* ${hostPath}( |$)`, "m"));
  });

  test("the chart as kind-up installs it puts a node-agent on both workers and exposes the gateway", () => {
    const flags = [...kindUpHelmSettings()]
      .filter(([key]) => !key.startsWith("image."))
      .flatMap(([key, value]) => ["--set", `${key}=${value}`]);
    const objects = renderChart({}, flags);
    const daemonSet = objects.find((o) => o.kind === "DaemonSet") as unknown as {
      spec: { template: { spec: { nodeSelector: Record<string, string> } } };
    };
    for (const worker of workers) {
      for (const [label, value] of Object.entries(daemonSet.spec.template.spec.nodeSelector)) {
        // kind sets kubernetes.io/os itself; the rest must come from kind-config.yaml.
        if (label === "kubernetes.io/os") expect(value).toBe("linux");
        else expect(worker.labels?.[label]).toBe(value);
      }
    }
    const service = objects.find((o) => o.kind === "Service" && o.metadata.name === "pomona-gateway") as unknown as {
      spec: { type: string; ports: { nodePort: number }[] };
    };
    expect(service.spec.type).toBe("NodePort");
    expect(service.spec.ports[0]!.nodePort).toBe(30080);
  });
});

describe("the kind scripts", () => {
  for (const script of ["scripts/kind-up.sh", "scripts/kind-down.sh"]) {
    test(`${script} parses with bash -n, is executable and stops on the first error`, () => {
      const path = join(repoRoot, script);
      execFileSync("bash", ["-n", path]);
      accessSync(path, constants.X_OK);
      expect(read(script)).toContain("set -euo pipefail");
    });
  }

  test("kind:up and kind:down are npm scripts", () => {
    const scripts = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts;
    expect(scripts["kind:up"]).toBe("bash scripts/kind-up.sh");
    expect(scripts["kind:down"]).toBe("bash scripts/kind-down.sh");
  });

  test("the smoke request asks for the model the quickstart applies, with the key it mints", () => {
    const docs = parseAllDocuments(read("examples/quickstart.yaml")).map(
      (d) => d.toJS() as { kind: string; metadata: { name: string } },
    );
    const model = docs.find((d) => d.kind === "InferenceModel")!.metadata.name;
    const key = docs.find((d) => d.kind === "ApiKey")!.metadata.name;
    expect(kindUp).toContain(`"model":"${model}"`);
    expect(kindUp).toContain(`inferencemodel/${model}`);
    expect(kindUp).toContain(`get secret ${key} -o jsonpath='{.data.key}' | base64 -d)`);
    // The key is read into a variable, never echoed.
    expect(kindUp).not.toMatch(/echo[^\n]*\$key/);
  });
});

describe("the Dockerfile", () => {
  const dockerfile = read("Dockerfile");
  const instructions = dockerfile
    .split("\n")
    .filter((line) => line.trim() && !line.trimStart().startsWith("#"))
    .map((line) => line.trim());
  const copiedFolders = instructions
    .filter((i) => i.startsWith("COPY ") && !i.includes("--from="))
    .flatMap((i) => i.split(/\s+/).slice(1, -1))
    .filter((source) => source.endsWith("/"))
    .map((source) => source.replace(/\/$/, ""));

  test("is multi-stage on node:24-slim, installs production dependencies with npm ci and runs as a non-root user", () => {
    const stages = instructions.filter((i) => i.startsWith("FROM "));
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const stage of stages) expect(stage).toMatch(/^FROM node:24-slim( AS \w+)?$/);
    expect(instructions).toContainEqual(expect.stringMatching(/^RUN npm ci --omit=dev/));
    const users = instructions.filter((i) => i.startsWith("USER "));
    // The node image's `node` user is uid 1000, the uid the chart's securityContext runs as.
    expect(users.at(-1)).toBe("USER node");
    expect(dockerfile.indexOf("USER node")).toBeGreaterThan(dockerfile.lastIndexOf("COPY"));
    expect(read("charts/pomona/templates/_helpers.tpl")).toContain("runAsUser: 1000");
  });

  test("copies the folder of every component command the chart runs, and .dockerignore keeps them", () => {
    const commands = renderChart()
      .filter((o) => o.kind === "Deployment" || o.kind === "DaemonSet")
      .map((o) => (o as unknown as { spec: { template: { spec: { containers: { command?: string[] }[] } } } }).spec)
      .flatMap((spec) => spec.template.spec.containers.map((c) => c.command))
      .filter((command): command is string[] => command !== undefined);
    expect(commands).toHaveLength(3);
    const ignored = read(".dockerignore")
      .split("\n")
      .map((l) => l.trim());
    for (const command of commands) {
      const [node] = command;
      const main = command.at(-1);
      expect(node).toBe("node");
      expect(copiedFolders).toContain(main!.split("/")[0]);
    }
    for (const folder of [...copiedFolders, "package.json", "package-lock.json"]) expect(ignored).not.toContain(folder);
  });

  test("runs the gateway by default, with the Node flags Pomona gives it (crds/api/well-known.ts)", () => {
    const cmd = instructions.filter((i) => i.startsWith("CMD ")).at(-1) ?? "";
    expect(JSON.parse(cmd.slice("CMD ".length))).toEqual([
      "node",
      ...nodeFlagsFor("gateway/main.ts"),
      "gateway/main.ts",
    ]);
  });

  test("every relative import of the copied sources stays inside the image", () => {
    const escapes: string[] = [];
    const walk = (dir: string): string[] =>
      readdirSync(dir).flatMap((name) => {
        const path = join(dir, name);
        return statSync(path).isDirectory() ? walk(path) : path.endsWith(".ts") ? [path] : [];
      });
    const files = copiedFolders.flatMap((folder) => walk(join(repoRoot, folder)));
    expect(files.length).toBeGreaterThan(10);
    for (const file of files) {
      for (const [, specifier] of readFileSync(file, "utf8").matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)) {
        const target = relative(repoRoot, resolve(dirname(file), specifier!));
        if (!copiedFolders.includes(target.split("/")[0]!)) escapes.push(`${relative(repoRoot, file)} → ${target}`);
      }
    }
    expect(escapes).toEqual([]);
  });
});
