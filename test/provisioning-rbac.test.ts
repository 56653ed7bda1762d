// Each component's service account, as the chart grants it, checked with `kubectl auth can-i` against the
// real API server: it can do what docs/components.md says it does, and nothing around it. The node-agent's
// admission policy is checked with impersonated requests carrying a node name, as a Pod's token does. The
// `kubectl auth can-i --list` listings in docs/security.md are checked against this API server too.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { allConfigSecretNames } from "../crds/api/gateway-config-codec.ts";
import { keyHashingSecret } from "../crds/api/key-hashing.ts";
import { nodeIdentity, nodeNameExtra, nodeTokenSecret } from "../crds/api/well-known.ts";
import type { KubeObject } from "../pulumi/manifests/index.ts";
import { renderChart } from "./provisioning-support.ts";
import { installCrds } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { repoRoot } from "./support/processes.ts";

const ns = "pomona-rbac";
/** A user namespace the operator serves (operator.watchNamespaces), where ApiKeys and ModelReplicas live. */
const team = "pomona-rbac-team";
/** A namespace the operator does not serve: models may live there, but the operator has no Secret rights. */
const other = "pomona-rbac-other";
const user = (sa: string) => `--as=system:serviceaccount:${ns}:pomona-${sa}`;

/** `kubectl auth can-i` as a component: true for yes, false for no. */
async function can(sa: string, args: string[]): Promise<boolean> {
  const result = await kubectl(["auth", "can-i", user(sa), ...args]);
  if (result.code !== 0 && result.stdout.trim() !== "no") throw new Error(result.stderr);
  return result.code === 0;
}

type Check = [string, string[]];

async function expectAll(sa: string, checks: Check[], expected: boolean) {
  const wrong: string[] = [];
  for (const [label, args] of checks) if ((await can(sa, args)) !== expected) wrong.push(label);
  expect(wrong, `pomona-${sa} should ${expected ? "" : "not "}be able to`).toEqual([]);
}

const inNs = (n: string) => ["-n", n];

let objects: KubeObject[];

beforeAll(async () => {
  await installCrds();
  await kubectlOk(["create", "namespace", ns]);
  await kubectlOk(["create", "namespace", team]);
  await kubectlOk(["create", "namespace", other]);
  objects = renderChart({ namespace: ns, operator: { watchNamespaces: [team] } }).filter((o) =>
    /ServiceAccount|Role|ValidatingAdmissionPolicy/.test(o.kind),
  );
  await kubectlOk(["apply", "-f", "-"], objects.map((o) => JSON.stringify(o)).join("\n---\n"));
});

afterAll(async () => {
  const cluster = objects.filter((o) => !o.metadata.namespace || o.metadata.namespace === "kube-node-lease");
  await kubectl(["delete", "--ignore-not-found", "-f", "-"], cluster.map((o) => JSON.stringify(o)).join("\n---\n"));
  await kubectl(["delete", "namespace", ns, team, other, "--wait=false"]);
});

describe("component RBAC from the chart", () => {
  test("the operator can run the API, mint key Secrets where it serves, record Events, hold its Lease and read nodes", async () => {
    await expectAll(
      "operator",
      [
        ["watch InferenceModels everywhere", ["watch", "inferencemodels.pomona.dev", "-A"]],
        ["list ApiKeys everywhere", ["list", "apikeys.pomona.dev", "-A"]],
        ["list RateLimitPolicies", ["list", "ratelimitpolicies.pomona.dev", "-A"]],
        ["patch InferenceModel status", ["patch", "inferencemodels.pomona.dev", "--subresource=status", ...inNs(team)]],
        ["patch ApiKey status", ["patch", "apikeys.pomona.dev", "--subresource=status", ...inNs(team)]],
        ["patch policy status", ["patch", "ratelimitpolicies.pomona.dev", "--subresource=status", ...inNs(team)]],
        ["create ModelReplicas", ["create", "modelreplicas.pomona.dev", ...inNs(team)]],
        ["delete ModelReplicas", ["delete", "modelreplicas.pomona.dev", ...inNs(team)]],
        ["create key Secrets beside ApiKeys", ["create", "secrets", ...inNs(team)]],
        ["watch key Secrets in a served namespace", ["watch", "secrets", ...inNs(team)]],
        ["update the gateway config", ["update", "secrets/pomona-gateway-config", ...inNs(ns)]],
        ["create the hashing key", ["create", "secrets", ...inNs(ns)]],
        ["schedule models in any namespace", ["create", "modelreplicas.pomona.dev", ...inNs(other)]],
        ["create Events", ["create", "events", ...inNs(team)]],
        ["create events.k8s.io Events", ["create", "events.events.k8s.io", ...inNs(team)]],
        ["create its Lease", ["create", "leases.coordination.k8s.io", ...inNs(ns)]],
        ["renew its Lease", ["update", "leases.coordination.k8s.io/pomona-operator", ...inNs(ns)]],
        ["watch Nodes", ["watch", "nodes"]],
        ["watch node Leases", ["watch", "leases.coordination.k8s.io", ...inNs("kube-node-lease")]],
      ],
      true,
    );
  });

  test("the operator cannot write what users or node-agents own, nor anything beyond Pomona", async () => {
    await expectAll(
      "operator",
      [
        ["delete InferenceModels (users own them)", ["delete", "inferencemodels.pomona.dev", ...inNs(team)]],
        ["create ApiKeys", ["create", "apikeys.pomona.dev", ...inNs(team)]],
        ["get a Secret where it does not serve", ["get", "secrets/anything", ...inNs(other)]],
        ["list Secrets where it does not serve", ["list", "secrets", ...inNs(other)]],
        ["create Secrets where it does not serve", ["create", "secrets", ...inNs(other)]],
        ["list Secrets cluster-wide", ["list", "secrets", "-A"]],
        ["read kube-system Secrets", ["get", "secrets", ...inNs("kube-system")]],
        ["patch Nodes", ["patch", "nodes"]],
        ["renew node Leases", ["update", "leases.coordination.k8s.io", ...inNs("kube-node-lease")]],
        ["take another Lease", ["update", "leases.coordination.k8s.io/kube-scheduler", ...inNs(ns)]],
        ["create Pods", ["create", "pods", ...inNs(ns)]],
        ["edit RBAC", ["create", "clusterroles"]],
        ["edit CRDs", ["update", "customresourcedefinitions.apiextensions.k8s.io"]],
      ],
      false,
    );
  });

  test("the node-agent can register and patch Nodes, renew node Leases and report replica status", async () => {
    await expectAll(
      "node-agent",
      [
        ["create Nodes", ["create", "nodes"]],
        ["patch Nodes", ["patch", "nodes/mac-1"]],
        ["patch Node status (model memory)", ["patch", "nodes/mac-1", "--subresource=status"]],
        ["create node Leases", ["create", "leases.coordination.k8s.io", ...inNs("kube-node-lease")]],
        ["renew node Leases", ["update", "leases.coordination.k8s.io/mac-1", ...inNs("kube-node-lease")]],
        ["list ModelReplicas everywhere", ["list", "modelreplicas.pomona.dev", "-A"]],
        ["watch ModelReplicas", ["watch", "modelreplicas.pomona.dev", "-A"]],
        ["patch replica status", ["patch", "modelreplicas.pomona.dev", "--subresource=status", ...inNs(team)]],
      ],
      true,
    );
  });

  test("the node-agent cannot change or delete ModelReplicas, read Secrets or touch other Leases", async () => {
    await expectAll(
      "node-agent",
      [
        ["delete ModelReplicas", ["delete", "modelreplicas.pomona.dev", ...inNs(team)]],
        ["create ModelReplicas", ["create", "modelreplicas.pomona.dev", ...inNs(team)]],
        ["patch a replica's spec", ["patch", "modelreplicas.pomona.dev", ...inNs(team)]],
        ["get Secrets", ["get", "secrets", ...inNs(ns)]],
        ["get the node token", ["get", `secrets/${nodeTokenSecret}`, ...inNs(ns)]],
        ["list Secrets anywhere", ["list", "secrets", "-A"]],
        ["delete Nodes", ["delete", "nodes"]],
        ["take the operator's Lease", ["update", "leases.coordination.k8s.io/pomona-operator", ...inNs(ns)]],
        ["write InferenceModels", ["patch", "inferencemodels.pomona.dev", ...inNs(team)]],
        ["create Pods", ["create", "pods", ...inNs(ns)]],
      ],
      false,
    );
  });

  test("the gateway can get and watch exactly the gateway config Secrets, the node token, the hashing key and its client certificate", async () => {
    const names = [...allConfigSecretNames(), nodeTokenSecret, keyHashingSecret, nodeIdentity.gatewayClientSecret];
    const role = objects.find((o) => o.kind === "Role" && o.metadata.name === "pomona-gateway") as unknown as {
      rules: { resourceNames: string[]; verbs: string[] }[];
    };
    expect(role.rules).toHaveLength(1);
    expect([...role.rules[0]!.resourceNames].sort()).toEqual([...names].sort());
    const checks: Check[] = names.flatMap((name) => [
      [`get ${name}`, ["get", `secrets/${name}`, ...inNs(ns)]] as Check,
    ]);
    checks.push(["watch the config", ["watch", "secrets/pomona-gateway-config", ...inNs(ns)]]);
    checks.push(["watch the last key bucket", ["watch", "secrets/pomona-gateway-config-keys-63", ...inNs(ns)]]);
    checks.push(["watch the hashing key", ["watch", `secrets/${keyHashingSecret}`, ...inNs(ns)]]);
    await expectAll("gateway", checks, true);
  });

  test("the gateway's own watch (one Secret by field selector) is allowed, a watch of all Secrets is not", async () => {
    const watch = (query: string) =>
      kubectl([
        "get",
        "--raw",
        `/api/v1/namespaces/${ns}/secrets?watch=true&timeoutSeconds=1${query}`,
        user("gateway"),
      ]);
    const named = await watch("&fieldSelector=metadata.name%3Dpomona-gateway-config");
    expect(named.stderr).toBe("");
    expect(named.code).toBe(0);
    const all = await watch("");
    expect(all.code).not.toBe(0);
    expect(all.stderr).toContain("Forbidden");
  });

  test("the gateway cannot read other Secrets, list Secrets, read other namespaces or write anything", async () => {
    await expectAll(
      "gateway",
      [
        ["get a minted key Secret", ["get", "secrets/pomona-admin", ...inNs(ns)]],
        ["get a Secret named like a 65th bucket", ["get", "secrets/pomona-gateway-config-keys-64", ...inNs(ns)]],
        ["list Secrets here", ["list", "secrets", ...inNs(ns)]],
        ["list Secrets anywhere", ["list", "secrets", "-A"]],
        ["get the config in another namespace", ["get", "secrets/pomona-gateway-config", ...inNs(team)]],
        ["update the config", ["update", "secrets/pomona-gateway-config", ...inNs(ns)]],
        ["update the hashing key", ["update", `secrets/${keyHashingSecret}`, ...inNs(ns)]],
        ["list ModelReplicas", ["list", "modelreplicas.pomona.dev", "-A"]],
        ["get Nodes", ["get", "nodes"]],
        ["get ApiKeys", ["get", "apikeys.pomona.dev", ...inNs(ns)]],
      ],
      false,
    );
  });
});

/** The listings in docs/security.md: `<!-- can-i <component> <context> -->` then a fenced block. */
function documentedListings(): Map<string, string> {
  const text = readFileSync(join(repoRoot, "docs", "security.md"), "utf8");
  const listings = new Map<string, string>();
  for (const m of text.matchAll(/<!-- can-i (\S+) (\S+) -->\n```\n([\s\S]*?)```/g))
    listings.set(`${m[1]} ${m[2]}`, m[3]!);
  return listings;
}

/**
 * Columns padded by kubectl differ with the longest name, so words are compared; rows are sorted; rows of
 * non-resource URLs (what every authenticated user may read: discovery, /healthz, /version) are left out.
 */
const normalized = (listing: string) =>
  listing
    .trim()
    .split("\n")
    .filter((line) => !/^\s+\[/.test(line))
    .map((line) => line.trim().split(/\s+/).join(" "))
    .sort()
    .join("\n");

describe("every service account's rights, as docs/security.md lists them", () => {
  const contexts: Record<string, string> = { release: ns, served: team, "not-served": other };
  const listings = documentedListings();
  for (const component of ["operator", "gateway", "node-agent"]) {
    for (const [context, namespace] of Object.entries(contexts)) {
      test(`kubectl auth can-i --list as pomona-${component} in the ${context} namespace`, async () => {
        const actual = await kubectlOk(["auth", "can-i", "--list", user(component), "-n", namespace]);
        const documented = listings.get(`${component} ${context}`);
        expect(
          documented === undefined ? undefined : normalized(documented),
          `docs/security.md <!-- can-i ${component} ${context} --> should read:\n${actual}`,
        ).toBe(normalized(actual));
      });
    }
  }
});

describe("the node-agent admission policy", () => {
  const agent = (node?: string) => [
    user("node-agent"),
    ...(node === undefined ? [] : [`--as-user-extra=${nodeNameExtra}=${node}`]),
  ];
  const replica = (name: string, nodeName: string) => ({
    apiVersion: "pomona.dev/v1alpha1",
    kind: "ModelReplica",
    metadata: { name, namespace: team },
    spec: {
      model: "qwen",
      nodeName,
      source: { hf: "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M" },
      engine: {},
      memoryBytes: 1_000_000,
      templateHash: "abc",
    },
  });
  const patchStatus = (name: string, node?: string) =>
    kubectl([
      "-n",
      team,
      "patch",
      `modelreplica/${name}`,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: { phase: "Loading" } }),
      ...agent(node),
    ]);

  beforeAll(async () => {
    await kubectlOk(
      ["apply", "-f", "-"],
      [replica("on-a", "node-a"), replica("on-b", "node-b")].map((o) => JSON.stringify(o)).join("\n---\n"),
    );
    // A new policy takes a moment to be enforced: wait until it denies a request it must deny.
    const deadline = Date.now() + 30_000;
    while ((await patchStatus("on-b", "node-a")).code === 0) {
      if (Date.now() > deadline) throw new Error("the admission policy was never enforced");
      await new Promise((r) => setTimeout(r, 250));
    }
  });

  test("an agent reports status of replicas bound to its own node", async () => {
    const result = await patchStatus("on-a", "node-a");
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(await kubectlOk(["-n", team, "get", "mr/on-a", "-o", "jsonpath={.status.phase}"])).toBe("Loading");
  });

  test("an agent cannot write the status of another node's replica", async () => {
    const result = await patchStatus("on-b", "node-a");
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("the node-agent of node node-a may not write objects of node node-b");
    expect(await kubectlOk(["-n", team, "get", "mr/on-b", "-o", "jsonpath={.status.phase}"])).toBe("");
  });

  test("an agent whose token names no node is refused", async () => {
    const result = await patchStatus("on-a");
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("must authenticate with a token bound to its node");
  });

  test("an agent registers its own Node and node Lease, and no other node's", async () => {
    const node = (name: string) => JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name } });
    const lease = (name: string) =>
      JSON.stringify({
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name, namespace: "kube-node-lease" },
        spec: { holderIdentity: name, leaseDurationSeconds: 40 },
      });
    try {
      expect((await kubectl(["create", "-f", "-", ...agent("mac-7")], node("mac-7"))).code).toBe(0);
      expect((await kubectl(["create", "-f", "-", ...agent("mac-7")], lease("mac-7"))).code).toBe(0);
      const otherNode = await kubectl(["create", "-f", "-", ...agent("mac-7")], node("mac-8"));
      expect(otherNode.code).not.toBe(0);
      expect(otherNode.stderr).toContain("may not write objects of node mac-8");
      const otherLease = await kubectl(["create", "-f", "-", ...agent("mac-7")], lease("mac-8"));
      expect(otherLease.code).not.toBe(0);
      expect(otherLease.stderr).toContain("may not write objects of node mac-8");
      const relabel = await kubectl(["label", "node", "mac-7", "pomona.dev/accelerator=metal", ...agent("mac-8")]);
      expect(relabel.code).not.toBe(0);
    } finally {
      await kubectl(["delete", "node", "mac-7", "mac-8", "--ignore-not-found"]);
      await kubectl(["-n", "kube-node-lease", "delete", "lease", "mac-7", "mac-8", "--ignore-not-found"]);
    }
  });

  test("a real token of an agent Pod names its node: the Pod on node-a may write node-a's replica, not node-b's", async () => {
    const pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "agent-on-node-a", namespace: ns },
      spec: {
        serviceAccountName: "pomona-node-agent",
        nodeName: "node-a",
        containers: [{ name: "agent", image: "pomona" }],
      },
    };
    await kubectlOk(["apply", "-f", "-"], JSON.stringify(pod));
    const token = (
      await kubectlOk([
        "-n",
        ns,
        "create",
        "token",
        "pomona-node-agent",
        "--bound-object-kind=Pod",
        `--bound-object-name=${pod.metadata.name}`,
      ])
    ).trim();
    const asPod = (name: string) =>
      kubectl([
        "-n",
        team,
        "patch",
        `modelreplica/${name}`,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Ready"}}',
        `--token=${token}`,
      ]);
    const own = await asPod("on-a");
    expect(own.stderr).toBe("");
    expect(own.code).toBe(0);
    const other = await asPod("on-b");
    expect(other.code).not.toBe(0);
    expect(other.stderr).toContain("the node-agent of node node-a may not write objects of node node-b");
  });

  test("a token bound to a Node (how a Mac's agent authenticates) names that node too", async () => {
    await kubectlOk(
      ["apply", "-f", "-"],
      JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: "node-b" } }),
    );
    try {
      const token = (
        await kubectlOk([
          "-n",
          ns,
          "create",
          "token",
          "pomona-node-agent",
          "--bound-object-kind=Node",
          "--bound-object-name=node-b",
        ])
      ).trim();
      const patch = (name: string) =>
        kubectl([
          "-n",
          team,
          "patch",
          `modelreplica/${name}`,
          "--subresource=status",
          "--type=merge",
          "-p",
          '{"status":{"phase":"Ready"}}',
          `--token=${token}`,
        ]);
      expect((await patch("on-b")).code).toBe(0);
      const other = await patch("on-a");
      expect(other.code).not.toBe(0);
      expect(other.stderr).toContain("the node-agent of node node-b may not write objects of node node-a");
    } finally {
      await kubectl(["delete", "node", "node-b", "--ignore-not-found"]);
    }
  });

  test("the policy binds only the node-agent: the operator still writes replicas of any node", async () => {
    const result = await kubectl([
      "-n",
      team,
      "patch",
      "modelreplica/on-b",
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: { phase: "Failed", message: "node lost" } }),
      user("operator"),
    ]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
  });
});
