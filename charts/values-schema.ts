// The chart's values.schema.json, generated from the zod schema of pulumi/settings.ts, so Helm and Pulumi
// accept exactly the same settings. test/provisioning-chart.test.ts fails when the committed file drifts.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { settingsFields, sharedLimitsJsonSchema } from "../pulumi/settings.ts";

export const valuesSchemaPath = join(import.meta.dirname, "pomona", "values.schema.json");

type Schema = { [key: string]: unknown };

/** Objects refuse unknown keys, so `--set gateway.replica=3` fails instead of doing nothing. */
function closeObjects(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(closeObjects);
  if (node === null || typeof node !== "object") return node;
  const out: Schema = {};
  for (const [key, value] of Object.entries(node)) out[key] = key === "default" ? value : closeObjects(value);
  if (out.type === "object" && out.properties !== undefined) out.additionalProperties = false;
  return out;
}

export function valuesSchema(): Schema {
  // The namespace is the release's (`helm install --namespace`), not a value.
  const schema = z.toJSONSchema(settingsFields.omit({ namespace: true }), { io: "input", target: "draft-7" });
  return {
    ...(closeObjects(schema) as Schema),
    // Cross-field rules are not part of zod's JSON Schema output; settings.ts states them in both forms.
    allOf: [sharedLimitsJsonSchema],
    title: "Pomona chart values (generated from pulumi/settings.ts)",
  };
}

export function writeValuesSchema(): void {
  writeFileSync(valuesSchemaPath, `${JSON.stringify(valuesSchema(), null, 2)}\n`);
}
