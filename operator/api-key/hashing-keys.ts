/**
 * The hashing keys of API keys (crds/api/key-hashing.ts): the operator creates
 * the Secret with a random current key when it is missing, and reads it from
 * its cache. An admin rotates by moving `current` to `previous` and writing a
 * new `current` (docs/security.md); every ApiKey is then hashed again.
 */
import { randomBytes } from "node:crypto";
import type { V1Secret } from "@kubernetes/client-node";
import {
  type HashingKeys,
  keyHashingDataKeys,
  keyHashingSecret,
  minHashingKeyBytes,
  parseHashingKeys,
} from "../../crds/api/index.ts";
import { secretsPath } from "../../kube/rest.ts";
import { type Cluster, keyHashingLabel } from "../cluster.ts";

/** Create the hashing-key Secret if it is missing; label one an admin made, so the operator's cache sees it. */
export async function ensureHashingSecret(cluster: Cluster): Promise<void> {
  const { rest } = cluster.applier;
  const namespace = cluster.scope.namespace;
  const path = `${secretsPath(namespace)}/${keyHashingSecret}`;
  try {
    const existing = await rest.get<V1Secret>(path);
    if (existing.metadata?.labels?.[keyHashingLabel] !== "true") {
      await rest.patch(path, { metadata: { labels: { [keyHashingLabel]: "true" } } }, "merge");
    }
    return;
  } catch (err) {
    if ((err as { code?: number }).code !== 404) throw err;
  }
  const secret: V1Secret = {
    metadata: { name: keyHashingSecret, namespace, labels: { [keyHashingLabel]: "true" } },
    type: "Opaque",
    data: { [keyHashingDataKeys.current]: randomBytes(minHashingKeyBytes).toString("base64") },
  };
  try {
    await rest.create(secretsPath(namespace), secret);
    cluster.log.info("created the API key hashing secret", { namespace, name: keyHashingSecret });
  } catch (err) {
    // Another operator replica (or an admin) was first: theirs is used.
    if ((err as { code?: number }).code !== 409) throw err;
  }
}

/** The hashing keys as cached; undefined while the Secret is missing. Throws when it is malformed. */
export function cachedHashingKeys(cluster: Cluster): HashingKeys | undefined {
  const secret = cluster.hashingSecret.get(keyHashingSecret, cluster.scope.namespace);
  return secret ? parseHashingKeys(secret.data) : undefined;
}
