/**
 * The package registry this project is built against serves the platform
 * packages of some native dependencies (biome, node-llama-cpp) only for the
 * platforms it builds on, so `npm install` leaves the others out of
 * package-lock.json and `npm ci` then refuses the lock as out of sync. This
 * adds each missing optional platform package back, with the os/cpu/libc its
 * name declares, so `npm ci` skips it on other platforms and fetches it by
 * version (e.g. the Metal build on a Mac) where it applies.
 * Run after `npm install` changes dependencies: `node scripts/complete-lockfile.ts`.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

type Entry = {
  version?: string;
  optional?: boolean;
  dev?: boolean;
  devOptional?: boolean;
  os?: string[];
  cpu?: string[];
  libc?: string[];
  optionalDependencies?: Record<string, string>;
};

const lockPath = join(import.meta.dirname, "..", "package-lock.json");
const lock = JSON.parse(readFileSync(lockPath, "utf8")) as { packages: Record<string, Entry> };

function platformOf(name: string): Pick<Entry, "os" | "cpu" | "libc"> {
  const part = name.split("/").at(-1) ?? name;
  const os = /android/.test(part)
    ? "android"
    : /darwin|mac/.test(part)
      ? "darwin"
      : /win/.test(part)
        ? "win32"
        : /linux/.test(part)
          ? "linux"
          : undefined;
  const cpu = ["arm64", "x64", "riscv64", "armv7l"].find((c) => part.includes(c));
  if (!os || !cpu) throw new Error(`cannot tell the platform of ${name}`);
  return { os: [os], cpu: [cpu === "armv7l" ? "arm" : cpu], ...(part.includes("musl") ? { libc: ["musl"] } : {}) };
}

let added = 0;
for (const [path, entry] of Object.entries(lock.packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    if (lock.packages[key]) continue;
    lock.packages[key] = {
      version,
      ...(entry.dev ? { dev: true } : {}),
      optional: true,
      ...platformOf(name),
    };
    added++;
    console.log(`added ${key}@${version} (optional, from ${path || "the root"})`);
  }
}
const sorted = Object.fromEntries(
  Object.entries(lock.packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a.localeCompare(b))),
);
writeFileSync(lockPath, `${JSON.stringify({ ...lock, packages: sorted }, null, 2)}\n`);
console.log(`${added} platform packages added to package-lock.json`);
