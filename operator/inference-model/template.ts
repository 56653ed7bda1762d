import { createHash } from "node:crypto";
import type { InferenceModelSpec } from "../../crds/api/index.ts";

/** Hash of the spec parts a replica is made from; a replica with another hash is outdated. */
export function templateHash(spec: InferenceModelSpec, memoryBytes: number): string {
  return createHash("sha256")
    .update(JSON.stringify({ source: spec.source, engine: spec.engine, memoryBytes }))
    .digest("hex")
    .slice(0, 16);
}

const alphabet = "abcdefghijklmnopqrstuvwxyz";

/** `<model>-<5 random lowercase letters>`, trimmed so the name stays a valid object name. */
export function replicaName(model: string): string {
  let suffix = "";
  for (let i = 0; i < 5; i++) suffix += alphabet[Math.floor(Math.random() * alphabet.length)];
  return `${model.slice(0, 240)}-${suffix}`;
}
