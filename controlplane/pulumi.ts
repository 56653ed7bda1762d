/**
 * The Pulumi CLI, the Node.js language host and the Kubernetes provider, built from Go modules for the
 * real `pulumi up` test (test/provisioning-pulumi-up.test.ts) and cached beside the control-plane
 * binaries in a folder keyed by their own pins, so only the first run pays for the build (about
 * 3 + 6 + 8 minutes on 2 cores). The control plane's cache key (binariesDir) does not change with them.
 *
 * - CLI: controlplane/go/pulumi (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi).
 * - Language host: ../shared/pulumi-language-nodejs beside the repository (its module is not served;
 *   see its README). Read-only: the binary is written to the cache.
 * - Kubernetes provider: controlplane/go/pulumi-kubernetes. Its module zip lacks the two files its
 *   main.go embeds, which upstream generates before building: the build copies the module out of the
 *   module cache, runs upstream's generate.go there and points a `replace` at the copy, in a temporary
 *   go.mod (-modfile), so the committed one stays as `go mod tidy` wrote it.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { cacheRoot } from "./binaries.ts";

const goRoot = join(import.meta.dirname, "go");
const repoRoot = join(import.meta.dirname, "..");
export const languageHostDir = join(repoRoot, "..", "shared", "pulumi-language-nodejs");

const providerModule = "github.com/pulumi/pulumi-kubernetes/provider/v4";

function pinned(module: string, path: string): string {
  const goMod = readFileSync(join(module, "go.mod"), "utf8");
  const escaped = path.replaceAll(".", "\\.").replaceAll("/", "\\/");
  const version = goMod.match(new RegExp(`^\\s*${escaped} (v\\S+)`, "m"))?.[1];
  if (!version) throw new Error(`${join(module, "go.mod")} does not require ${path}`);
  return version;
}

/** The Pulumi release of the CLI and language host (their shared sdk/v3 stamps it into both). */
export function pulumiVersion(): string {
  return pinned(join(goRoot, "pulumi"), "github.com/pulumi/pulumi/pkg/v3");
}

/**
 * The provider's version is the @pulumi/kubernetes npm package's: the SDK asks for a plugin of its own
 * version, and the provider reports the version it was stamped with (its module is served only as a
 * pseudo-version, which says nothing about the release).
 */
export function kubernetesProviderVersion(): string {
  const pkg = join(repoRoot, "node_modules", "@pulumi", "kubernetes", "package.json");
  return (JSON.parse(readFileSync(pkg, "utf8")) as { version: string }).version;
}

interface Tool {
  name: string;
  /** Directory of the module `go build` runs in. */
  cwd: string;
  pkg: string;
  ldflags: string;
  /** The module's files that pin what gets built: the cache key. */
  pins: string[];
  /** Work before the build; returns extra `go build` flags. */
  prepare?: (work: string, log: (line: string) => void) => Promise<string[]>;
}

const sdkVersionFlag = (version: string) => `-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=${version}`;

function tools(): Tool[] {
  const cli = join(goRoot, "pulumi");
  const provider = join(goRoot, "pulumi-kubernetes");
  const hostFiles = readdirSync(languageHostDir).filter((f) => f.endsWith(".go") || f === "go.mod" || f === "go.sum");
  return [
    {
      name: "pulumi",
      cwd: cli,
      pkg: "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi",
      ldflags: sdkVersionFlag(pulumiVersion()),
      pins: ["go.mod", "go.sum"].map((f) => join(cli, f)),
    },
    {
      name: "pulumi-language-nodejs",
      cwd: languageHostDir,
      pkg: ".",
      ldflags: sdkVersionFlag(pinned(languageHostDir, "github.com/pulumi/pulumi/sdk/v3")),
      pins: hostFiles.sort().map((f) => join(languageHostDir, f)),
    },
    {
      name: "pulumi-resource-kubernetes",
      cwd: provider,
      pkg: `${providerModule}/cmd/pulumi-resource-kubernetes`,
      ldflags: `-X ${providerModule}/pkg/version.Version=${kubernetesProviderVersion()}`,
      pins: ["go.mod", "go.sum"].map((f) => join(provider, f)),
      prepare: prepareProvider,
    },
  ];
}

/** The cache folder for the three tools at their pins; the control plane's own folder is unaffected. */
export function pulumiToolsDir(): string {
  const hash = createHash("sha256");
  for (const tool of tools()) {
    hash.update(`${tool.name}\0${tool.ldflags}\0`);
    for (const file of tool.pins) hash.update(readFileSync(file));
  }
  return join(cacheRoot(), "bin", `pulumi-${hash.digest("hex").slice(0, 16)}`);
}

/** Runs go, printing how long it has been going and the package it is on, every 30 s. */
function go(args: string[], cwd: string, what: string, log: (line: string) => void, env = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("go", args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const started = Date.now();
    let stdout = "";
    let stderr = "";
    let lastPackage = "";
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk;
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk).slice(-20_000);
      // `go build -v` names each package as it compiles it: the progress line shows the latest.
      const lines = String(chunk).trim().split("\n");
      lastPackage = lines[lines.length - 1] ?? lastPackage;
    });
    const timer = setInterval(() => {
      const elapsed = Math.round((Date.now() - started) / 1000);
      log(
        `  ${what}: ${Math.floor(elapsed / 60)}m${String(elapsed % 60).padStart(2, "0")}s${lastPackage ? ` (${lastPackage})` : ""}`,
      );
    }, 30_000);
    child.on("error", (error) => {
      clearInterval(timer);
      reject(error);
    });
    child.on("exit", (code) => {
      clearInterval(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`go ${args.join(" ")} (in ${cwd}) failed with ${code}:\n${stderr.slice(-4000)}`));
    });
  });
}

/**
 * Upstream's build step the module zip leaves out: a writable copy of the module, `VERSION=… go run
 * generate.go` in it (writes schema-embed.json and terraform-mapping-embed.json from the schema.json and
 * terraform-mapping.json beside it), and a temporary go.mod whose `replace` points at the copy.
 */
async function prepareProvider(work: string, log: (line: string) => void): Promise<string[]> {
  const cwd = join(goRoot, "pulumi-kubernetes");
  const version = pinned(cwd, providerModule);
  const download = JSON.parse(
    await go(["mod", "download", "-json", `${providerModule}@${version}`], cwd, "download", log),
  ) as {
    Dir?: string;
    Error?: string;
  };
  if (!download.Dir)
    throw new Error(`go mod download ${providerModule}@${version}: ${download.Error ?? "no directory"}`);
  const copy = join(work, "provider");
  cpSync(download.Dir, copy, { recursive: true });
  // The module cache is read-only; the copy must not be.
  chmodTree(copy);
  const cmd = join(copy, "cmd", "pulumi-resource-kubernetes");
  // Upstream's go.mod points sdk/v4 at the repository's ../sdk, which the module zip lacks; generate.go
  // does not use it, so the copy takes the served sdk/v4 for this step (and -mod=mod records its sums).
  await go(["mod", "edit", "-dropreplace=github.com/pulumi/pulumi-kubernetes/sdk/v4"], copy, "go mod edit", log);
  await go(["run", "-mod=mod", "generate.go"], cmd, "generate.go", log, { VERSION: kubernetesProviderVersion() });
  // Back to the module as served, so the build resolves exactly what the committed go.sum pins.
  for (const file of ["go.mod", "go.sum"]) cpSync(join(download.Dir, file), join(copy, file));
  for (const file of ["schema-embed.json", "terraform-mapping-embed.json"]) {
    if (!existsSync(join(cmd, file))) throw new Error(`generate.go did not write ${file}`);
  }
  const modfile = join(work, "go.mod");
  cpSync(join(cwd, "go.mod"), modfile);
  cpSync(join(cwd, "go.sum"), join(work, "go.sum"));
  await go(["mod", "edit", `-modfile=${modfile}`, `-replace=${providerModule}=${copy}`], cwd, "go mod edit", log);
  return [`-modfile=${modfile}`];
}

function chmodTree(dir: string): void {
  chmodSync(dir, 0o755);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) chmodTree(path);
    else chmodSync(path, 0o644);
  }
}

export interface PulumiTools {
  /** Put first on PATH (after Node 24): the CLI finds the language host and provider there. */
  dir: string;
  pulumi: string;
}

/** Builds whatever is missing; a second call costs a few file reads. */
export async function ensurePulumiTools(log: (line: string) => void = console.error): Promise<PulumiTools> {
  const dir = pulumiToolsDir();
  mkdirSync(dir, { recursive: true });
  for (const tool of tools()) {
    const target = join(dir, tool.name);
    if (existsSync(target)) continue;
    log(`building ${tool.name} from Go modules (first run only, several minutes)…`);
    const started = Date.now();
    const work = join(dir, `${tool.name}.work`);
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work);
    try {
      const extra = tool.prepare ? await tool.prepare(work, log) : [];
      // Built beside the target and renamed, so an interrupted build never leaves a broken binary in the cache.
      const args = ["build", "-v", ...extra, "-ldflags", tool.ldflags, "-o", `${target}.partial`, tool.pkg];
      await go(args, tool.cwd, `building ${tool.name}`, log);
      renameSync(`${target}.partial`, target);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    log(`built ${tool.name} in ${Math.round((Date.now() - started) / 1000)} s`);
  }
  return { dir, pulumi: join(dir, "pulumi") };
}

if (import.meta.main) {
  const { dir } = await ensurePulumiTools((line) => console.log(line));
  console.log(`pulumi tools ready in ${dir}`);
}
