/** Progress lines for a terminal (redrawn in place) or a log (one line per step). */
const tty = process.stdout.isTTY === true;

export function step(message: string): void {
  process.stdout.write(`${tty ? "\r\x1b[2K" : ""}• ${message}\n`);
}

export function bar(label: string, done: number, total: number | undefined): void {
  if (!tty) return;
  const width = 30;
  const ratio = total ? Math.min(1, done / total) : 0;
  const filled = Math.round(ratio * width);
  const figures = total
    ? `${(done / 2 ** 20).toFixed(1)}/${(total / 2 ** 20).toFixed(1)} MiB`
    : `${(done / 2 ** 20).toFixed(1)} MiB`;
  process.stdout.write(`\r\x1b[2K  ${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${figures}`);
}
