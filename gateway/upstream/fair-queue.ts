/**
 * Waiters of one priority class of one model's line, in sub-queues per party
 * (an API key). The next turn goes to the party with the fewest requests being
 * served right now, ties in round-robin order: a key that floods the model
 * already holds slots, so a key sending one request at a time goes next, and
 * a hundred waiters of one key never push back another key's one. A
 * sub-queue exists only while it holds a waiter.
 */
export class FairQueue<W> {
  private readonly byParty = new Map<string, W[]>();
  /** Parties with waiters, the next one to serve first. */
  private readonly ring: string[] = [];
  size = 0;

  /** `front` puts a waiter back at the head of its party's sub-queue (it keeps its place after a retry). */
  push(party: string, waiter: W, front = false): void {
    let queue = this.byParty.get(party);
    if (!queue) {
      queue = [];
      this.byParty.set(party, queue);
      this.ring.push(party);
    }
    if (front) queue.unshift(waiter);
    else queue.push(waiter);
    this.size++;
  }

  /** The party whose turn it is and its first waiter, left in place; `serving` counts a party's requests in service. */
  peek(serving: (party: string) => number): { party: string; waiter: W } | undefined {
    let best: string | undefined;
    let least = Number.POSITIVE_INFINITY;
    for (const party of this.ring) {
      const n = serving(party);
      if (n < least) {
        least = n;
        best = party;
        if (n === 0) break;
      }
    }
    return best === undefined ? undefined : { party: best, waiter: this.byParty.get(best)![0]! };
  }

  /** Remove the first waiter of the party (whose turn it was); the party goes to the back of the round. */
  shift(party: string): W | undefined {
    const queue = this.byParty.get(party);
    if (!queue) return undefined;
    const waiter = queue.shift();
    this.size--;
    this.ring.splice(this.ring.indexOf(party), 1);
    if (queue.length > 0) this.ring.push(party);
    else this.byParty.delete(party);
    return waiter;
  }

  /** Remove a waiter wherever it stands (it gave up, or its deadline passed). */
  remove(party: string, waiter: W): boolean {
    const queue = this.byParty.get(party);
    const at = queue?.indexOf(waiter) ?? -1;
    if (!queue || at < 0) return false;
    queue.splice(at, 1);
    this.size--;
    if (queue.length === 0) {
      this.byParty.delete(party);
      this.ring.splice(this.ring.indexOf(party), 1);
    }
    return true;
  }

  countOf(party: string): number {
    return this.byParty.get(party)?.length ?? 0;
  }

  /** The party holding the most waiters, and its newest waiter: the one to evict when the line is full. */
  heaviest(): { party: string; count: number; newest: W } | undefined {
    let best: { party: string; count: number; newest: W } | undefined;
    for (const [party, queue] of this.byParty) {
      if (!best || queue.length > best.count) best = { party, count: queue.length, newest: queue.at(-1)! };
    }
    return best;
  }

  /** Empty the queue, returning every waiter. */
  drain(): W[] {
    const all = [...this.byParty.values()].flat();
    this.byParty.clear();
    this.ring.length = 0;
    this.size = 0;
    return all;
  }
}
