// Copies crds/*.yaml into the chart's crds/ folder, which Helm installs before the templates.
// The copies are committed; test/provisioning-chart.test.ts fails when they drift from crds/.
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const sourceCrdDir = join(import.meta.dirname, "..", "crds");
export const chartCrdDir = join(import.meta.dirname, "pomona", "crds");

/** File name to text of every CRD in crds/, as the chart must hold them. */
export function crdFiles(dir = sourceCrdDir): Map<string, string> {
  const names = readdirSync(dir).filter((name) => name.endsWith(".yaml"));
  return new Map(names.sort().map((name) => [name, readFileSync(join(dir, name), "utf8")]));
}

export function copyCrdsIntoChart(): string[] {
  const wanted = crdFiles();
  // A CRD removed from crds/ must leave the chart too.
  for (const name of crdFiles(chartCrdDir).keys()) if (!wanted.has(name)) rmSync(join(chartCrdDir, name));
  for (const [name, text] of wanted) writeFileSync(join(chartCrdDir, name), text);
  return [...wanted.keys()];
}
