/**
 * Kubernetes quantities as Pomona reads them (512Mi, 3.5Gi, 8G, 1073741824): in the API's memory fields,
 * in a Node's capacity and in the node-agent's settings. One pattern for the schema and the parser.
 */
export const QUANTITY = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/;

const factors: Record<string, number> = {
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

/** Bytes, rounded up (as Kubernetes rounds a fractional quantity); undefined when malformed or too large. */
export function parseQuantity(text: string): number | undefined {
  const m = QUANTITY.exec(text.trim());
  if (!m) return undefined;
  const bytes = Math.ceil(Number(m[1]) * (factors[m[2] ?? ""] ?? 1));
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}
