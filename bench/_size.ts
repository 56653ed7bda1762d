/**
 * Full or quick size. `npm run bench -- --quick` (bench/run.ts passes `--quick` on to every script) and
 * `node bench/<name>.ts --quick` run a benchmark at a tiny size: few rounds, small counts, so CI checks
 * that every report can still be produced. Quick figures are noise, never results: run.ts does not write
 * docs/benchmarks.md for them, and each report says it was a quick run.
 */
export const QUICK = process.argv.includes("--quick") || process.env.POMONA_BENCH_QUICK === "1";

/** The full-size value, or the quick one under --quick. */
export const size = <T>(full: T, quick: T): T => (QUICK ? quick : full);

/** A line for the top of a report made at quick size. */
export const quickNote = () =>
  QUICK
    ? "\n> **Quick run (`--quick`): tiny sizes to check the report is produced; these are not the figures.**\n"
    : "";
