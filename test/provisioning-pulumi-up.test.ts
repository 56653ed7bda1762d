// A real `pulumi up` of pulumi/ against the test API server, with the CLI, the Node.js language host and
// the Kubernetes provider built from Go modules (controlplane/pulumi.ts) and a local file backend: every
// declared object exists with the settings given, a second preview is empty, one changed setting changes
// only what depends on it, the provisioned configuration serves a chat completion (and so does the one
// `helm install` creates), and `pulumi destroy` leaves nothing behind.
// The API server has no kubelet, so the program's `pomona:skipAwait` setting switches the provider's
// readiness waits off, and test/support/local-kubelet.ts starts the containers as local processes.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, test } from "vitest";
import { ensurePulumiTools, type PulumiTools } from "../controlplane/pulumi.ts";
import { nodeTokenSecret } from "../crds/api/well-known.ts";
import { componentObjects, crdObjects, type KubeObject, namespaceObject } from "../pulumi/manifests/index.ts";
import { type PomonaSettingsInput, parseSettings } from "../pulumi/settings.ts";
import { chartDir, helm } from "./provisioning-support.ts";
import { installCrds, repoRoot } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { serveThroughProvisionedStack } from "./support/provisioned-stack.ts";

const namespace = "pomona-pulumi-up";
const stack = "pomona-test";
/** The settings given to `pulumi config set`: non-defaults, so the objects show they were applied. */
const settings: PomonaSettingsInput = {
  namespace,
  gateway: { replicas: 1, logLevel: "debug" },
  operator: { nodeLostAfterSeconds: 30 },
  nodeAgent: { modelMemory: "1Gi" },
};
const configCommands = [
  ["config", "set", "pomona:namespace", namespace],
  // The test API server has no kubelet: no Pod ever becomes ready, so the provider must not wait for one.
  ["config", "set", "pomona:skipAwait", "true"],
  ["config", "set", "--path", "pomona:gateway.replicas", "1"],
  ["config", "set", "--path", "pomona:gateway.logLevel", "debug"],
  ["config", "set", "--path", "pomona:operator.nodeLostAfterSeconds", "30"],
  ["config", "set", "--path", "pomona:nodeAgent.modelMemory", "1Gi"],
];

let tools: PulumiTools;
let work: string;
/** How long each step took here, printed at the end for the README and CI's budget. */
const timings: [string, number][] = [];

async function timed<T>(step: string, run: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await run();
  } finally {
    timings.push([step, Math.round((Date.now() - started) / 100) / 10]);
  }
}

/** The pulumi CLI in pulumi/, with the three binaries and Node 24 first on PATH; fails with its output. */
function pulumi(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(tools.pulumi, [...args, "--non-interactive"], {
      cwd: join(repoRoot, "pulumi"),
      env: {
        ...process.env,
        PATH: `${join(repoRoot, "node_modules", ".bin")}:${tools.dir}:${process.env.PATH}`,
        // Everything Pulumi keeps (credentials, plugins, workspace) stays in the test's folder.
        PULUMI_HOME: join(work, "home"),
        PULUMI_CONFIG_PASSPHRASE: "passphrase-of-the-test-stack",
        PULUMI_SKIP_UPDATE_CHECK: "true",
        // The binaries are on PATH; nothing may be downloaded (there is no network here).
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
        KUBECONFIG: inject("kubeconfig"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c;
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr += c;
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(stdout);
      else
        reject(new Error(`pulumi ${args.join(" ")} failed (${code}):\n${stdout.slice(-6000)}\n${stderr.slice(-4000)}`));
    });
  });
}

/** Every object the program declares for the settings: the namespace, the CRDs, the node token and the rest. */
function declaredObjects(input: PomonaSettingsInput): KubeObject[] {
  const parsed = parseSettings(input);
  const token: KubeObject = {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: nodeTokenSecret, namespace: parsed.namespace },
    type: "Opaque",
  };
  return [namespaceObject(parsed), ...crdObjects(), token, ...componentObjects(parsed)];
}

/** kubectl's name for an object's type: `kind.version.group`, so no two groups' kinds are confused. */
function resourceOf(object: KubeObject): string {
  const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/") : ["", object.apiVersion];
  // The core group has no name: kubectl takes its kinds bare.
  return group ? `${object.kind.toLowerCase()}.${version}.${group}` : object.kind.toLowerCase();
}

interface ServerObject {
  kind: string;
  metadata: { name: string; generation?: number; resourceVersion: string; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** The objects as the server holds them, in the same order; a missing one fails kubectl. */
async function serverObjects(objects: KubeObject[]): Promise<ServerObject[]> {
  // Some objects live outside the stack's namespace (the node Lease rights in kube-node-lease).
  const found = new Map<KubeObject, ServerObject>();
  for (const ns of new Set(objects.map((o) => o.metadata.namespace ?? namespace))) {
    const group = objects.filter((o) => (o.metadata.namespace ?? namespace) === ns);
    const names = group.map((o) => `${resourceOf(o)}/${o.metadata.name}`);
    const list = JSON.parse(await kubectlOk(["get", "-n", ns, "-o", "json", ...names])) as { items?: ServerObject[] };
    const items = list.items ?? [list as unknown as ServerObject];
    for (const [i, o] of group.entries()) found.set(o, items[i]!);
  }
  return objects.map((o) => found.get(o)!);
}

/** What changes when an object's spec changes: its generation where it has one, else its resourceVersion. */
const revisions = async (objects: KubeObject[]) =>
  new Map(
    (await serverObjects(objects)).map((o) => [
      `${o.kind}/${o.metadata.name}`,
      String(o.metadata.generation ?? o.metadata.resourceVersion),
    ]),
  );

/** A `--json` answer of the CLI; anything it printed before the document (a warning) is skipped. */
const parseJson = <T>(text: string): T => JSON.parse(text.slice(text.indexOf("{"))) as T;

interface PreviewStep {
  op: string;
  urn: string;
}

async function previewSteps(): Promise<PreviewStep[]> {
  const preview = parseJson<{ steps?: PreviewStep[] }>(await pulumi(["preview", "--json", "--show-sames"]));
  return preview.steps ?? [];
}

const changed = (steps: PreviewStep[]) =>
  steps.filter((s) => s.op !== "same").map((s) => `${s.op} ${s.urn.split("::").at(-1)}`);

beforeAll(async () => {
  // CI builds them ahead (npm run build:pulumi); a cold build takes about 17 minutes on 2 cores.
  tools = await timed("build or find the pulumi binaries", () => ensurePulumiTools((line) => console.log(line)));
  work = mkdtempSync(join(tmpdir(), "pomona-pulumi-up-"));
  // The program installs the CRDs itself, and `pulumi destroy` removes them: start without them.
  await kubectl(["delete", "-f", join(repoRoot, "crds"), "--ignore-not-found", "--wait"]);
  // The file backend wants its folder to exist.
  mkdirSync(join(work, "state"));
  await pulumi(["login", `file://${join(work, "state")}`]);
  await pulumi(["stack", "init", stack, "--secrets-provider", "passphrase"]);
  for (const command of configCommands) await pulumi(command);
}, 3_600_000);

afterAll(async () => {
  if (work) {
    await pulumi(["destroy", "--yes", "--skip-preview"]).catch(() => {});
    await pulumi(["stack", "rm", "--yes", "--force", stack]).catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
  // The other suites share this API server and expect the CRDs.
  await installCrds();
  console.log(`[pulumi up] seconds per step:\n${timings.map(([step, s]) => `  ${s} s  ${step}`).join("\n")}`);
}, 600_000);

describe("pulumi up of pulumi/ against a real API server", () => {
  test("creates every object the program declares, with the settings given", async () => {
    const output = await timed("pulumi up (create)", () => pulumi(["up", "--yes", "--skip-preview"]));
    const declared = declaredObjects(settings);
    expect(output).toContain(`${declared.length + 2} created`); // + the stack and the PomonaStack component
    const objects = await serverObjects(declared);
    expect(objects).toHaveLength(declared.length);
    for (const [i, expected] of declared.entries()) {
      const actual = objects[i]!;
      const { apiVersion: _a, kind, metadata, stringData: _s, ...body } = expected;
      expect(`${actual.kind}/${actual.metadata.name}`).toBe(`${kind}/${metadata.name}`);
      if (metadata.labels) expect(actual.metadata).toMatchObject({ labels: metadata.labels });
      expect(actual.metadata.annotations?.["pulumi.com/skipAwait"]).toBe("true");
      expect(actual, `${kind}/${metadata.name}`).toMatchObject(body);
    }
    // The settings given are in the objects (toMatchObject above compared them all; two spelt out).
    const gateway = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "pomona-gateway")!;
    expect(gateway).toMatchObject({ spec: { replicas: 1 } });
    expect(JSON.stringify(gateway)).toContain('{"name":"POMONA_LOG_LEVEL","value":"debug"}');
    // The node token was generated, is in the state only encrypted, and the Secret holds it.
    const token = objects.find((o) => o.kind === "Secret")! as unknown as { data: { token: string } };
    const value = Buffer.from(token.data.token, "base64").toString("utf8");
    expect(value.length).toBeGreaterThanOrEqual(40);
    expect(await pulumi(["stack", "export"])).not.toContain(value);
  });

  test("a second preview shows no changes", async () => {
    const steps = await timed("pulumi preview (no changes)", previewSteps);
    expect(steps.length).toBeGreaterThan(30);
    expect(changed(steps)).toEqual([]);
  });

  test("changing one setting changes only the objects that depend on it", async () => {
    const declared = declaredObjects(settings);
    const before = await revisions(declared);
    await pulumi(["config", "set", "--path", "pomona:gateway.logLevel", "warn"]);
    settings.gateway = { ...settings.gateway, logLevel: "warn" };
    const steps = await timed("pulumi preview (one setting changed)", previewSteps);
    expect(changed(steps)).toEqual([`update deployment-${namespace}-pomona-gateway`]);
    await timed("pulumi up (update)", () => pulumi(["up", "--yes", "--skip-preview"]));
    const after = await revisions(declared);
    const differing = [...after].filter(([key, revision]) => before.get(key) !== revision).map(([key]) => key);
    expect(differing).toEqual(["Deployment/pomona-gateway"]);
    const [gateway] = await serverObjects(
      declared.filter((o) => o.kind === "Deployment" && o.metadata.name === "pomona-gateway"),
    );
    expect(JSON.stringify(gateway)).toContain('{"name":"POMONA_LOG_LEVEL","value":"warn"}');
  });

  test("the provisioned configuration serves a chat completion through the gateway", async () => {
    const answer = await timed("run the stack pulumi created, one chat completion", () =>
      serveThroughProvisionedStack(namespace),
    );
    expect(answer.content.length).toBeGreaterThan(0);
  }, 600_000);

  test("pulumi destroy removes everything and leaves no orphan", async () => {
    const declared = declaredObjects(settings);
    await timed("pulumi destroy", () => pulumi(["destroy", "--yes", "--skip-preview"]));
    const state = parseJson<{ deployment: { resources?: unknown[] } }>(await pulumi(["stack", "export"]));
    expect(state.deployment.resources ?? []).toEqual([]);
    // The namespace goes through Terminating while its contents are removed.
    const deadline = Date.now() + 120_000;
    let left: string[] = [];
    // Objects of Pomona's own kinds go with their CRDs, which are checked themselves (kubectl could not
    // even name those kinds once the CRDs are gone).
    const names = declared
      .filter((o) => !o.apiVersion.startsWith("pomona.dev/"))
      .map((o) => `${resourceOf(o)}/${o.metadata.name}`);
    do {
      const result = await kubectl(["get", "-n", namespace, "--ignore-not-found", "-o", "name", ...names]);
      expect(result.stderr).toBe("");
      left = result.stdout.split("\n").filter(Boolean);
      if (left.length === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    } while (Date.now() < deadline);
    expect(left).toEqual([]);
    // Nothing the program made is left in the namespaces it uses, nor cluster-wide (other suites apply the
    // same objects in namespaces of their own, so those are not looked at).
    const selector = ["-o", "name", "-l", "app.kubernetes.io/part-of=pomona,app.kubernetes.io/managed-by=pulumi"];
    const namespaced =
      "secrets,serviceaccounts,services,deployments,daemonsets,poddisruptionbudgets,roles,rolebindings";
    const clusterWide =
      "namespaces,clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings,customresourcedefinitions";
    const labelled = [
      ...(await Promise.all(
        [namespace, "kube-node-lease"].map((ns) => kubectlOk(["get", "-n", ns, ...selector, namespaced])),
      )),
      await kubectlOk(["get", ...selector, clusterWide]),
    ].join("");
    expect(labelled.trim()).toBe("");
  }, 300_000);
});

describe("helm install of charts/pomona, run the same way", () => {
  const helmNamespace = "pomona-helm-up";
  afterAll(async () => {
    await kubectl(["delete", "namespace", helmNamespace, "--ignore-not-found", "--wait=false"]);
  });

  test("the objects helm installed serve a chat completion through the gateway", async () => {
    const env = ["--kubeconfig", inject("kubeconfig"), "--namespace", helmNamespace];
    await timed("helm install", async () =>
      helm(["install", "pomona", chartDir, ...env, "--create-namespace", "--set", "nodeAgent.modelMemory=1Gi"]),
    );
    try {
      const answer = await timed("run the stack helm created, one chat completion", () =>
        serveThroughProvisionedStack(helmNamespace),
      );
      expect(answer.content.length).toBeGreaterThan(0);
    } finally {
      helm(["uninstall", "pomona", ...env]);
    }
  }, 600_000);
});
