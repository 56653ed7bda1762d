// Shared by the limit-window tests: a seeded random generator, so a failure can be replayed, and the most
// charged in any window-length span of a run.

/** A small seeded generator. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** What a run charged: each admitted request's time and its final amount (usage if settled, else reservation). */
export interface Charge {
  at: number;
  amount: number;
}

/** The most charged in any closed span [t - windowMs, t]; the worst span ends at an admission. */
export function mostInAnySpan(charges: Charge[], windowMs: number): number {
  const sorted = [...charges].sort((a, b) => a.at - b.at);
  let most = 0;
  let sum = 0;
  let first = 0;
  for (const c of sorted) {
    sum += c.amount;
    while (sorted[first]!.at < c.at - windowMs) sum -= sorted[first++]!.amount;
    most = Math.max(most, sum);
  }
  return most;
}
