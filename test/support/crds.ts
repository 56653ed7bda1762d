import { join } from "node:path";
import { resourceDefinitions } from "../../crds/api/index.ts";
import { kubectlOk } from "./kubectl.ts";
import { repoRoot } from "./processes.ts";

// Suites that install the CRDs often need the checkout's other files too.
export { repoRoot } from "./processes.ts";

/** Install the CRDs as a user does and wait until the API server serves them. */
export async function installCrds(kubeconfig?: string): Promise<void> {
  await kubectlOk(["apply", "--server-side", "-f", join(repoRoot, "crds")], undefined, kubeconfig);
  const names = resourceDefinitions.map((d) => `crd/${d.plural}.pomona.dev`);
  await kubectlOk(["wait", "--for=condition=Established", "--timeout=60s", ...names], undefined, kubeconfig);
}
