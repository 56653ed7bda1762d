/**
 * helm, built from the Go module pinned in controlplane/go/helm for the chart tests, and cached
 * beside the control-plane binaries, keyed by that pin, so only the first run pays for the build.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { cacheRoot } from "./binaries.ts";

const moduleDir = join(import.meta.dirname, "go", "helm");

/** The helm release pinned in controlplane/go/helm/go.mod. */
export function helmVersion(): string {
  const goMod = readFileSync(join(moduleDir, "go.mod"), "utf8");
  const version = goMod.match(/helm\.sh\/helm\/v3 (v\d+\.\d+\.\d+)/)?.[1];
  if (!version) throw new Error("controlplane/go/helm/go.mod does not pin helm.sh/helm/v3");
  return version;
}

/**
 * Release builds stamp helm's own version and the Kubernetes version `helm template` assumes (from the
 * client-go it links); without them helm calls itself v3.x and renders for Kubernetes v1.20.
 */
function versionFlags(): string {
  const goMod = readFileSync(join(moduleDir, "go.mod"), "utf8");
  const minor = goMod.match(/k8s\.io\/client-go v0\.(\d+)\./)?.[1];
  if (!minor) throw new Error("controlplane/go/helm/go.mod does not require k8s.io/client-go");
  return [
    `-X helm.sh/helm/v3/internal/version.version=${helmVersion()}`,
    ...["pkg/chartutil", "pkg/lint/rules"].flatMap((pkg) => [
      `-X helm.sh/helm/v3/${pkg}.k8sVersionMajor=1`,
      `-X helm.sh/helm/v3/${pkg}.k8sVersionMinor=${minor}`,
    ]),
  ].join(" ");
}

/** Path of the helm binary, built on first use. */
export function ensureHelm(log: (line: string) => void = console.error): string {
  const ldflags = versionFlags();
  const hash = createHash("sha256").update(ldflags);
  for (const file of ["go.mod", "go.sum"]) hash.update(readFileSync(join(moduleDir, file)));
  const dir = join(cacheRoot(), "bin", `helm-${hash.digest("hex").slice(0, 16)}`);
  const target = join(dir, "helm");
  if (existsSync(target)) return target;
  mkdirSync(dir, { recursive: true });
  log("building helm from Go modules (first run only, a few minutes)…");
  // Build beside the target and rename, so an interrupted build never leaves a broken binary in the cache.
  execFileSync("go", ["build", "-ldflags", ldflags, "-o", `${target}.partial`, "helm.sh/helm/v3/cmd/helm"], {
    cwd: moduleDir,
    stdio: ["ignore", "inherit", "inherit"],
  });
  renameSync(`${target}.partial`, target);
  return target;
}

if (import.meta.main) console.log(ensureHelm());
