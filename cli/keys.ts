/** `pomona keys create|rotate|list|revoke`: API keys without writing YAML. */
import { setTimeout as sleep } from "node:timers/promises";
import type { V1Secret } from "@kubernetes/client-node";
import type { ApiKey } from "../crds/api/index.ts";
import { mintKey } from "../operator/api-key/key-material.ts";
import { mintedFor } from "../operator/api-key/plan.ts";
import { kubeconfigFor } from "./cluster.ts";
import { connect, isNotFound, type Kube } from "./kube.ts";
import { table } from "./table.ts";

interface KeyFlags {
  owner?: string;
  models?: string;
  policy?: string;
}

const ready = (k: ApiKey) => k.status?.conditions?.find((c) => c.type === "Ready");

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
    process.stdout.write(
      table(
        ["NAME", "OWNER", "PREFIX", "MODELS", "POLICY", "STATE", "EXPIRES"],
        items.map((k) => [
          k.metadata.name,
          k.spec.owner,
          k.status?.prefix,
          k.spec.models?.join(",") ?? "all",
          k.spec.rateLimitPolicy,
          ready(k)?.reason,
          k.spec.expiresAt,
        ]),
      ),
    );
    return;
  }
  if (!name) throw new Error(`keys ${verb ?? ""} needs a key name`);
  const readApiKey = async (): Promise<ApiKey> =>
    (await kube.custom.getNamespacedCustomObject({ ...ref, name })) as ApiKey;

  if (verb === "create") {
    const spec: Record<string, unknown> = { owner: flags.owner ?? name };
    if (flags.models) spec.models = flags.models.split(",").map((m) => m.trim());
    if (flags.policy) spec.rateLimitPolicy = flags.policy;
    let created: ApiKey;
    try {
      // Create, never apply: an existing key is neither printed again nor handed to a new owner.
      created = (await kube.custom.createNamespacedCustomObject({
        ...ref,
        body: { apiVersion: "pomona.dev/v1alpha1", kind: "ApiKey", metadata: { name, namespace }, spec },
      })) as ApiKey;
    } catch (error) {
      if ((error as { code?: number }).code !== 409) throw error;
      throw new Error(
        `apikey ${namespace}/${name} already exists; \`pomona keys rotate ${name}\` gives it a new key, \`pomona keys revoke ${name}\` deletes it`,
      );
    }
    const key = await mintedKey(kube, created, readApiKey);
    process.stdout.write(`${key}\n`);
    return;
  }
  if (verb === "rotate") {
    let apiKey: ApiKey;
    try {
      apiKey = await readApiKey();
    } catch (error) {
      if (isNotFound(error))
        throw new Error(`apikey ${namespace}/${name} does not exist; create it with \`pomona keys create ${name}\``);
      throw error;
    }
    if (apiKey.spec.secretRef)
      throw new Error(
        `apikey ${namespace}/${name} uses your Secret ${apiKey.spec.secretRef.name}; write the new key into that Secret instead`,
      );
    const secret = await kube.core.readNamespacedSecret({ name, namespace });
    if (!mintedFor(secret, apiKey))
      throw new Error(`Secret ${namespace}/${name} was not minted for apikey ${name}; nothing rotated`);
    const key = mintKey();
    // The resourceVersion makes this fail rather than overwrite a key someone else wrote meanwhile.
    await kube.core.replaceNamespacedSecret({
      name,
      namespace,
      body: { ...secret, data: { ...secret.data, key: Buffer.from(key).toString("base64") } },
    });
    await waitFor(`the operator to take the new key of ${name}`, async () => {
      const k = await readApiKey();
      return k.status?.prefix === key.slice(0, 14) ? true : undefined;
    });
    process.stdout.write(`${key}\n`);
    process.stderr.write(`the old key of ${name} stops working once the gateways apply the next config\n`);
    return;
  }
  if (verb === "revoke") {
    await kube.custom.deleteNamespacedCustomObject({ ...ref, name });
    process.stdout.write(`apikey ${namespace}/${name} revoked\n`);
    return;
  }
  throw new Error(`unknown keys command ${verb}: use create, rotate, list or revoke`);
}

/** The key the operator minted for this very ApiKey (its uid), or the reason it gave for not minting one. */
async function mintedKey(kube: Kube, apiKey: ApiKey, readApiKey: () => Promise<ApiKey>): Promise<string> {
  const { name = "", namespace = "" } = apiKey.metadata;
  return waitFor(`the operator to mint key ${name}; is it running?`, async () => {
    const condition = ready(await readApiKey());
    if (condition?.status === "False" && condition.reason.startsWith("Secret"))
      throw new Error(`apikey ${namespace}/${name} has no key: ${condition.message}`);
    let secret: V1Secret;
    try {
      secret = await kube.core.readNamespacedSecret({ name, namespace });
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
    const data = secret.data?.key;
    return data && mintedFor(secret, apiKey) ? Buffer.from(data, "base64").toString("utf8") : undefined;
  });
}

async function waitFor<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 150; i++) {
    const found = await check();
    if (found !== undefined) return found;
    await sleep(200);
  }
  throw new Error(`timed out after 30 s waiting for ${what}`);
}
