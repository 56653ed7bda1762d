// Writes the chart's generated files: crds/ (copies of crds/*.yaml) and values.schema.json (from
// pulumi/settings.ts). `npm run generate` runs it after crds/generate.ts.
import { copyCrdsIntoChart } from "./copy-crds.ts";
import { writeValuesSchema } from "./values-schema.ts";

for (const name of copyCrdsIntoChart()) console.log(`wrote charts/pomona/crds/${name}`);
writeValuesSchema();
console.log("wrote charts/pomona/values.schema.json");
