import { readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { parse } from "yaml";
import { manifestSchemaFor, resourceDefinitions } from "../crds/api/index.ts";
import { renderCrdFiles } from "../crds/render.ts";
import { invalidManifests } from "./invalid-manifests.ts";
import { installCrds, repoRoot } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";

/** Every property under a schema node, with its path, for the description check. */
function* properties(node: Record<string, unknown>, path: string): Generator<[string, Record<string, unknown>]> {
  const props = (node.properties ?? {}) as Record<string, Record<string, unknown>>;
  for (const [name, child] of Object.entries(props)) {
    yield [`${path}.${name}`, child];
    yield* properties(child, `${path}.${name}`);
  }
  const items = node.items as Record<string, unknown> | undefined;
  if (items) yield* properties(items, `${path}[]`);
}

describe("the Pomona API", () => {
  beforeAll(async () => {
    console.log(`testing against kube-apiserver ${inject("kubernetesVersion")}`);
    await installCrds();
  });

  it("keeps the CRD YAML in crds/ identical to what crds/api/ renders", () => {
    for (const [name, text] of renderCrdFiles()) {
      expect(readFileSync(join(repoRoot, "crds", name), "utf8"), `crds/${name} is stale: run npm run generate`).toBe(
        text,
      );
    }
  });

  it("describes every field of spec and status", () => {
    for (const [name, text] of renderCrdFiles()) {
      const crd = parse(text);
      const root = crd.spec.versions[0].schema.openAPIV3Schema;
      for (const part of ["spec", "status"]) {
        for (const [path, schema] of properties(root.properties[part], part)) {
          expect(schema.description, `${name}: ${path} has no description`).toBeTruthy();
        }
      }
    }
  });

  it("installs every CRD as Established with short names and the pomona category", async () => {
    const out = await kubectlOk(["api-resources", "--api-group=pomona.dev", "-o", "wide"]);
    for (const d of resourceDefinitions) {
      const row = out.split("\n").find((line) => line.startsWith(`${d.plural} `));
      expect(row, `${d.plural} is not served`).toBeDefined();
      expect(row).toContain(d.shortNames.join(","));
      expect(row).toContain("pomona");
    }
  });

  it("accepts every example as a user applies it, and so does zod", async () => {
    const out = await kubectlOk(["apply", "-f", join(repoRoot, "examples")]);
    expect(out).toMatch(/inferencemodel.pomona.dev\/qwen2.5-0.5b-instruct (created|configured|unchanged)/);
    expect(out).toMatch(/apikey.pomona.dev\/demo-key (created|configured|unchanged)/);
    expect(out).toMatch(/ratelimitpolicy.pomona.dev\/standard (created|configured|unchanged)/);
    for (const file of ["model.yaml", "api-key.yaml", "rate-limit-policy.yaml"]) {
      const manifest = parse(readFileSync(join(repoRoot, "examples", file), "utf8"));
      const result = manifestSchemaFor(manifest.kind).safeParse(manifest);
      expect(result.error, file).toBeUndefined();
    }
  });

  it("fills in defaults on the server as zod does", async () => {
    const served = JSON.parse(await kubectlOk(["get", "inferencemodel", "qwen2.5-0.5b-instruct", "-o", "json"]));
    const manifest = parse(readFileSync(join(repoRoot, "examples", "model.yaml"), "utf8"));
    const parsed = manifestSchemaFor("InferenceModel").parse(manifest) as { spec: unknown };
    expect(served.spec).toEqual(parsed.spec);
  });

  it("shows useful printer columns in kubectl get", async () => {
    const models = await kubectlOk(["get", "im"]);
    expect(models.split("\n")[0]).toMatch(/^NAME\s+READY\s+DESIRED\s+STATUS\s+AGE$/);
    expect(models).toMatch(/qwen2.5-0.5b-instruct\s+1\s+/);
    const policies = await kubectlOk(["get", "rlp"]);
    expect(policies).toMatch(/standard\s+60\s+20000\s+4\s+PerKey/);
    const keys = await kubectlOk(["get", "ak", "-o", "wide"]);
    expect(keys.split("\n")[0]).toMatch(/NAME\s+OWNER\s+PREFIX\s+STATUS\s+EXPIRES\s+SECRET\s+AGE/);
    const all = await kubectlOk(["get", "pomona"]);
    expect(all).toContain("inferencemodel.pomona.dev/qwen2.5-0.5b-instruct");
    expect(all).toContain("apikey.pomona.dev/demo-key");
  });

  it("scales a model with kubectl scale", async () => {
    await kubectlOk(["scale", "inferencemodel/qwen2.5-0.5b-instruct", "--replicas=3"]);
    const replicas = await kubectlOk(["get", "im", "qwen2.5-0.5b-instruct", "-o", "jsonpath={.spec.replicas}"]);
    expect(replicas).toBe("3");
    await kubectlOk(["scale", "im/qwen2.5-0.5b-instruct", "--replicas=1"]);
  });

  it("explains its fields in kubectl explain", async () => {
    const out = await kubectlOk(["explain", "inferencemodel.spec"]);
    expect(out).toContain("The desired state of an InferenceModel.");
    expect(out).toContain("exactly one of hf, url or path");
    const source = await kubectlOk(["explain", "im.spec.source.sha256"]);
    expect(source).toContain("64 lowercase hex digits");
  });

  it("refuses a replica that moves to another node", async () => {
    const replica = {
      apiVersion: "pomona.dev/v1alpha1",
      kind: "ModelReplica",
      metadata: { name: "moving-replica" },
      spec: {
        model: "m",
        nodeName: "node-a",
        source: { path: "/models/m.gguf" },
        engine: { contextSize: 512, parallelSequences: 2 },
        memoryBytes: 0,
        templateHash: "abc",
      },
    };
    await kubectlOk(["apply", "-f", "-"], JSON.stringify(replica));
    replica.spec.nodeName = "node-b";
    const moved = await kubectl(["apply", "-f", "-"], JSON.stringify(replica));
    expect(moved.code).not.toBe(0);
    expect(moved.stderr).toContain("nodeName is immutable");
    await kubectlOk(["delete", "modelreplica", "moving-replica"]);
  });

  it(`refuses ${invalidManifests.length} invalid manifests on the API server and in zod alike`, async () => {
    expect(invalidManifests.length).toBeGreaterThanOrEqual(25);
    for (const c of invalidManifests) {
      const result = await kubectl(["apply", "--dry-run=server", "-f", "-"], JSON.stringify(c.manifest));
      expect(result.code, `${c.name}: the API server accepted it`).not.toBe(0);
      expect(result.stderr, c.name).toContain(c.apiServerSays);

      const parsed = manifestSchemaFor(c.manifest.kind as string).safeParse(c.manifest);
      expect(parsed.success, `${c.name}: zod accepted it`).toBe(false);
      if (c.cel) expect(parsed.error?.issues.map((i) => i.message).join("; "), c.name).toContain(c.apiServerSays);
    }
  });
});
