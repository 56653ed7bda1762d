/** Parse a Kubernetes quantity (e.g. 512Mi, 3.5Gi, 8G, 1e9) into bytes; undefined when malformed. */
const suffixes: Record<string, number> = {
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

export function parseQuantity(text: string): number | undefined {
  const m = /^([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)([kMGTPE]i?)?$/.exec(text.trim());
  if (!m) return undefined;
  const factor = suffixes[m[2] ?? ""];
  if (factor === undefined) return undefined;
  return Math.ceil(Number(m[1]) * factor);
}

export function formatBytes(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${bytes} B`;
}
