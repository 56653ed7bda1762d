/**
 * The binaries of the local control plane — kube-apiserver, kube-controller-manager,
 * kubectl and etcd — built from the Go modules in controlplane/go at the
 * versions pinned there, and cached outside the repository, keyed by those
 * pins, so only the first run pays for the build.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const goRoot = join(import.meta.dirname, "go");

interface GoTool {
  module: "kube" | "etcd";
  pkg: string;
  name: string;
}

const tools: GoTool[] = [
  { module: "kube", pkg: "k8s.io/kubernetes/cmd/kube-apiserver", name: "kube-apiserver" },
  { module: "kube", pkg: "k8s.io/kubernetes/cmd/kube-controller-manager", name: "kube-controller-manager" },
  { module: "kube", pkg: "k8s.io/kubernetes/cmd/kubectl", name: "kubectl" },
  { module: "etcd", pkg: "go.etcd.io/etcd/server/v3", name: "etcd" },
];

/** The Kubernetes release pinned in controlplane/go/kube/go.mod. */
export function kubernetesVersion(): string {
  const goMod = readFileSync(join(goRoot, "kube", "go.mod"), "utf8");
  const version = goMod.match(/^require k8s\.io\/kubernetes (v\d+\.\d+\.\d+)$/m)?.[1];
  if (!version) throw new Error("controlplane/go/kube/go.mod does not pin k8s.io/kubernetes");
  return version;
}

/** Release builds stamp the version with ldflags; without them the binaries call themselves v0.0.0-master. */
function versionFlags(tool: GoTool): string {
  if (tool.module !== "kube") return "";
  const version = kubernetesVersion();
  const [major, minor] = version.slice(1).split(".");
  return ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"]
    .flatMap((pkg) => [
      `-X ${pkg}.gitVersion=${version}`,
      `-X ${pkg}.gitMajor=${major}`,
      `-X ${pkg}.gitMinor=${minor}`,
      `-X ${pkg}.gitTreeState=clean`,
    ])
    .join(" ");
}

export interface ControlPlaneBinaries {
  kubeApiserver: string;
  kubeControllerManager: string;
  kubectl: string;
  etcd: string;
  dir: string;
}

export function cacheRoot(): string {
  return process.env.POMONA_CACHE_DIR ?? join(homedir(), ".cache", "pomona");
}

/** The cache folder for the pinned versions: a change of go.mod or go.sum gives a new one. */
export function binariesDir(): string {
  const hash = createHash("sha256");
  for (const module of ["kube", "etcd"]) {
    for (const file of ["go.mod", "go.sum"]) hash.update(readFileSync(join(goRoot, module, file)));
  }
  return join(cacheRoot(), "bin", hash.digest("hex").slice(0, 16));
}

/** Build whatever is missing; a second call costs a few file checks. */
export function ensureBinaries(log: (line: string) => void = console.error): ControlPlaneBinaries {
  const dir = binariesDir();
  mkdirSync(dir, { recursive: true });
  for (const tool of tools) {
    const target = join(dir, tool.name);
    if (existsSync(target)) continue;
    log(`building ${tool.name} from Go modules (first run only, a few minutes)…`);
    const started = Date.now();
    // Build beside the target and rename, so an interrupted build never leaves a broken binary in the cache.
    execFileSync("go", ["build", "-ldflags", versionFlags(tool), "-o", `${target}.partial`, tool.pkg], {
      cwd: join(goRoot, tool.module),
      stdio: ["ignore", "inherit", "inherit"],
    });
    renameSync(`${target}.partial`, target);
    log(`built ${tool.name} in ${Math.round((Date.now() - started) / 1000)} s`);
  }
  return {
    dir,
    kubeApiserver: join(dir, "kube-apiserver"),
    kubeControllerManager: join(dir, "kube-controller-manager"),
    kubectl: join(dir, "kubectl"),
    etcd: join(dir, "etcd"),
  };
}
