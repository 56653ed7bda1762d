/** `pomona keys create|list|revoke`: API keys without writing YAML. */
import { setTimeout as sleep } from "node:timers/promises";
import type { ApiKey } from "../crds/api/index.ts";
import { kubeconfigFor } from "./cluster.ts";
import { apply, connect, isNotFound } from "./kube.ts";
import { table } from "./table.ts";

interface KeyFlags {
  owner?: string;
  models?: string;
  policy?: string;
}

export async function keys(
  options: { kubeconfig?: string; stateDir: string; namespace: string },
  args: string[],
  flags: KeyFlags,
): Promise<void> {
  const kube = connect(kubeconfigFor(options));
  const { namespace } = options;
  const [verb, name] = args;
  const ref = { group: "pomona.dev", version: "v1alpha1", namespace, plural: "apikeys" };

  if (verb === "list") {
    const { items } = (await kube.custom.listNamespacedCustomObject(ref)) as { items: ApiKey[] };
    const state = (k: ApiKey) => k.status?.conditions?.find((c) => c.type === "Ready")?.reason;
    process.stdout.write(
      table(
        ["NAME", "OWNER", "PREFIX", "MODELS", "POLICY", "STATE", "EXPIRES"],
        items.map((k) => [
          k.metadata.name,
          k.spec.owner,
          k.status?.prefix,
          k.spec.models?.join(",") ?? "all",
          k.spec.rateLimitPolicy,
          state(k),
          k.spec.expiresAt,
        ]),
      ),
    );
    return;
  }
  if (!name) throw new Error(`keys ${verb ?? ""} needs a key name`);
  if (verb === "create") {
    const spec: Record<string, unknown> = { owner: flags.owner ?? name };
    if (flags.models) spec.models = flags.models.split(",").map((m) => m.trim());
    if (flags.policy) spec.rateLimitPolicy = flags.policy;
    await apply(kube, {
      apiVersion: "pomona.dev/v1alpha1",
      kind: "ApiKey",
      metadata: { name, namespace },
      spec,
    } as never);
    for (let i = 0; i < 100; i++) {
      try {
        const key = (await kube.core.readNamespacedSecret({ name, namespace })).data?.key;
        if (key) {
          process.stdout.write(`${Buffer.from(key, "base64").toString("utf8")}\n`);
          return;
        }
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
      await sleep(200);
    }
    throw new Error(`the operator did not mint key ${name} within 20 s; is it running?`);
  }
  if (verb === "revoke") {
    await kube.custom.deleteNamespacedCustomObject({ ...ref, name });
    process.stdout.write(`apikey ${namespace}/${name} revoked\n`);
    return;
  }
  throw new Error(`unknown keys command ${verb}: use create, list or revoke`);
}
