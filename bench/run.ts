/**
 * `npm run bench`: runs every benchmark in bench/ one after another (they share
 * two cores; running them together would measure contention) and writes
 * docs/benchmarks.md with the machine, the date and each one's Markdown output.
 * Each benchmark is a standalone script that prints Markdown to stdout and
 * measures its comparisons side by side within its own run.
 *
 *   npm run bench                  every benchmark at full size; writes docs/benchmarks.md
 *   npm run bench -- <part>        only those whose name contains <part>; writes nothing
 *   npm run bench -- --quick       every benchmark at a tiny size (each script gets --quick); writes
 *                                  nothing and exits non-zero if any report cannot be produced (CI)
 *
 * Manual benchmarks (the soak) are never in the default list: `npm run soak`.
 */
import { spawn } from "node:child_process";
import { readdirSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem } from "node:os";
import { join } from "node:path";

const benchDir = import.meta.dirname;
const MANUAL = new Set(["soak.ts"]);
const args = process.argv.slice(2);
const quick = args.includes("--quick");
const only = args.filter((a) => a !== "--quick");
const scripts = readdirSync(benchDir)
  .filter((f) => f.endsWith(".ts") && f !== "run.ts" && !f.startsWith("_") && !MANUAL.has(f))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();

/** A benchmark still running after this is stopped and reported as failed, so a hang cannot stall CI. */
const SCRIPT_LIMIT_MS = (quick ? 10 : 40) * 60_000;

function runScript(file: string): Promise<{ code: number; stdout: string; seconds: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(benchDir, file), ...(quick ? ["--quick"] : [])], {
      // The variable too, for a script that hands its size down to helpers it starts.
      env: quick ? { ...process.env, POMONA_BENCH_QUICK: "1" } : process.env,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c;
      process.stdout.write(c);
    });
    const limit = setTimeout(() => {
      console.error(`${file} still running after ${SCRIPT_LIMIT_MS / 60_000} min: stopped`);
      child.kill("SIGKILL");
    }, SCRIPT_LIMIT_MS);
    child.on("close", (code) => {
      clearTimeout(limit);
      resolve({ code: code ?? -1, stdout, seconds: (Date.now() - started) / 1000 });
    });
  });
}

const started = Date.now();
const sections: string[] = [];
const failures: string[] = [];
const times: string[] = [];
for (const file of scripts) {
  console.error(`\n▶ ${file}${quick ? " --quick" : ""}`);
  const { code, stdout, seconds } = await runScript(file);
  // A report is produced when the script exits 0 and printed its target table (or, without targets, something).
  if (code !== 0 || stdout.trim() === "") failures.push(`${file} (exit code ${code})`);
  times.push(`${file} ${seconds.toFixed(0)} s`);
  sections.push(
    `## ${file}\n\n${code === 0 ? stdout.trim() : `**failed with exit code ${code}**\n\n${stdout.trim()}`}\n\n_${seconds.toFixed(0)} s_`,
  );
}
const total = (Date.now() - started) / 1000;
console.error(`\n${times.join(", ")}; ${total.toFixed(0)} s in all`);

const machine = [
  `- date: ${new Date().toISOString()}`,
  `- CPU: ${cpus()[0]?.model ?? "unknown"}, ${availableParallelism()} usable cores`,
  `- memory: ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
  `- Node ${process.version} on ${process.platform}/${process.arch}`,
].join("\n");

if (only.length === 0 && !quick) {
  writeFileSync(
    join(benchDir, "..", "docs", "benchmarks.md"),
    `# Benchmarks\n\nWritten by \`npm run bench\`; every figure is a median over repeated runs, and every comparison is measured side by side in the same run.\n\n${machine}\n\n${sections.join("\n\n")}\n`,
  );
  console.error("\nwrote docs/benchmarks.md");
}
if (failures.length > 0) console.error(`\nno report from: ${failures.join(", ")}`);
process.exit(failures.length === 0 ? 0 : 1);
