/**
 * `npm run bench`: runs every benchmark in bench/ one after another (they share
 * two cores; running them together would measure contention) and writes
 * docs/benchmarks.md with the machine, the date and each one's Markdown output.
 * Each benchmark is a standalone script that prints Markdown to stdout and
 * measures its comparisons side by side within its own run.
 */
import { spawn } from "node:child_process";
import { readdirSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem } from "node:os";
import { join } from "node:path";

const benchDir = import.meta.dirname;
const only = process.argv.slice(2);
const scripts = readdirSync(benchDir)
  .filter((f) => f.endsWith(".ts") && f !== "run.ts" && !f.startsWith("_"))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();

function runScript(file: string): Promise<{ code: number; stdout: string; seconds: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(benchDir, file)], { stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => {
      stdout += c;
      process.stdout.write(c);
    });
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, seconds: (Date.now() - started) / 1000 }));
  });
}

const sections: string[] = [];
let failed = 0;
for (const file of scripts) {
  console.error(`\n▶ ${file}`);
  const { code, stdout, seconds } = await runScript(file);
  if (code !== 0) failed++;
  sections.push(
    `## ${file}\n\n${code === 0 ? stdout.trim() : `**failed with exit code ${code}**\n\n${stdout.trim()}`}\n\n_${seconds.toFixed(0)} s_`,
  );
}

const machine = [
  `- date: ${new Date().toISOString()}`,
  `- CPU: ${cpus()[0]?.model ?? "unknown"}, ${availableParallelism()} usable cores`,
  `- memory: ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
  `- Node ${process.version} on ${process.platform}/${process.arch}`,
].join("\n");

if (only.length === 0) {
  writeFileSync(
    join(benchDir, "..", "docs", "benchmarks.md"),
    `# Benchmarks\n\nWritten by \`npm run bench\`; every figure is a median over repeated runs, and every comparison is measured side by side in the same run.\n\n${machine}\n\n${sections.join("\n\n")}\n`,
  );
  console.error("\nwrote docs/benchmarks.md");
}
process.exit(failed === 0 ? 0 : 1);
