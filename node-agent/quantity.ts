/** Kubernetes quantities (8Gi, 512M, 1073741824) to bytes. */
const factors: Record<string, number> = {
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
};

export function parseQuantity(text: string): number | undefined {
  const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$/.exec(text.trim());
  if (!m) return undefined;
  const bytes = Math.floor(Number(m[1]) * (factors[m[2] ?? ""] ?? 1));
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}
