// kube/rest.ts (the operator's, the gateway's and the node-agent's calls to the API server) and kube/kube-config-only.ts (KubeConfig without
// client-node's generated code), against the real API server.
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import type { V1Secret } from "@kubernetes/client-node";
import { describe, expect, inject, it } from "vitest";
import { KubeApiError, KubeRest, secretsPath } from "../kube/rest.ts";
import { kubeConfig } from "./support/gateway.ts";

const root = join(import.meta.dirname, "..");
const rest = () => new KubeRest(kubeConfig());

async function failure(call: Promise<unknown>): Promise<KubeApiError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(KubeApiError);
  return err as KubeApiError;
}

describe("KubeRest", () => {
  it("reads, creates, patches, replaces and deletes by path, as plain JSON", async () => {
    const api = rest();
    const name = `rest-${Date.now()}`;
    const path = `${secretsPath("default")}/${name}`;
    const created = await api.create<V1Secret>(secretsPath("default"), {
      metadata: { name },
      stringData: { a: "1" },
    });
    expect(created.metadata?.name).toBe(name);
    await api.patch(path, { metadata: { labels: { merged: "yes" } } }, "merge");
    const read = await api.get<V1Secret>(path);
    expect(read.metadata?.labels).toEqual({ merged: "yes" });
    expect(typeof read.metadata?.creationTimestamp).toBe("string");
    await api.replace(path, { ...read, data: { b: Buffer.from("2").toString("base64") } });
    expect(Object.keys((await api.get<V1Secret>(path)).data ?? {})).toEqual(["b"]);
    await api.delete(path);
    expect((await failure(api.get(path))).code).toBe(404);
  });

  it("turns an answer other than 2xx into an error with the status, the reason and the server's message", async () => {
    const api = rest();
    const missing = await failure(api.get(`${secretsPath("default")}/no-such-secret`));
    expect(missing.code).toBe(404);
    expect(missing.reason).toBe("NotFound");
    expect(missing.message).toBe(
      'GET /api/v1/namespaces/default/secrets/no-such-secret: 404 NotFound: secrets "no-such-secret" not found',
    );
    const twice = { metadata: { name: `clash-${Date.now()}` } };
    await api.create(secretsPath("default"), twice);
    const exists = await failure(api.create(secretsPath("default"), twice));
    expect(exists.code).toBe(409);
    expect(exists.reason).toBe("AlreadyExists");
    await api.delete(`${secretsPath("default")}/${twice.metadata.name}`);
  });

  it("never puts what was sent into the error: a refused Secret's data stays out of the message", async () => {
    const value = "sk-this-must-not-leak";
    const refused = await failure(
      rest().create(secretsPath("default"), { metadata: { name: "Not_A_Valid_Name" }, stringData: { key: value } }),
    );
    expect(refused.code).toBe(422);
    expect(refused.message).toContain("Not_A_Valid_Name");
    expect(refused.message).not.toContain(value);
  });
});

describe.each([
  ["operator", "operator.ts"],
  ["gateway", "gateway.ts"],
  ["node-agent", "node-agent.ts"],
])("the %s's process", (component, body) => {
  it("loads KubeConfig and every module without client-node's generated APIs and models", async () => {
    // Every module of the component but its entry points (which would start it), after the hook of main.ts.
    const modules = [
      ...readdirSync(join(root, component), { recursive: true, encoding: "utf8" })
        .filter((f) => f.endsWith(".ts") && f !== "main.ts" && f !== body)
        .map((f) => join(root, component, f)),
      ...readdirSync(join(root, "kube")).map((f) => join(root, "kube", f)),
    ];
    const script = `
      import { registerHooks } from "node:module";
      const loaded = [];
      registerHooks({ load(url, context, next) {
        const at = url.indexOf("/@kubernetes/client-node/dist/");
        if (at >= 0) loaded.push(url.slice(at + 30));
        return next(url, context);
      } });
      await import(${JSON.stringify(join(root, "kube/kube-config-only.ts"))});
      for (const m of ${JSON.stringify(modules)}) await import(m);
      const { KubeConfig } = await import("@kubernetes/client-node/dist/config.js");
      const { KubeRest } = await import(${JSON.stringify(join(root, "kube/rest.ts"))});
      const kc = new KubeConfig();
      kc.loadFromFile(${JSON.stringify(inject("kubeconfig"))});
      const ns = await new KubeRest(kc).get("/api/v1/namespaces/default");
      let generated = "";
      try { kc.makeApiClient(class {}); } catch (err) { generated = err.message; }
      console.log(JSON.stringify({ loaded, namespace: ns.metadata.name, generated }));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
      cwd: root,
    });
    const result = JSON.parse(stdout) as { loaded: string[]; namespace: string; generated: string };
    expect(result.namespace).toBe("default");
    expect(result.loaded).toContain("config.js");
    expect(result.loaded).toContain("watch.js");
    expect(result.loaded.filter((m) => m.startsWith("gen/") && !/^gen\/(http\/|rxjsStub\.js)/.test(m))).toEqual([]);
    expect(result.generated).toMatch(/generated API classes are not loaded in this process/);
  });
});
