// Writes the CRD YAML of crds/api/ into crds/. CI fails when the result differs from what is committed.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { renderCrdFiles } from "./render.ts";

for (const [name, text] of renderCrdFiles()) {
  writeFileSync(join(import.meta.dirname, name), text);
  console.log(`wrote crds/${name}`);
}
