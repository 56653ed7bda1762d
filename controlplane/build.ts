// Builds the control plane's binaries into the cache now, so the first test run does not pay for it.
import { ensureBinaries } from "./binaries.ts";

const { dir } = ensureBinaries((line) => console.log(line));
console.log(`control plane binaries ready in ${dir}`);
