/**
 * Waiters of one priority class of one model's line, in sub-queues per party
 * (an API key), served round-robin over the parties: a key with a hundred
 * waiters and a key with one get turns alternately, so flooding cannot starve
 * anyone. A sub-queue exists only while it holds a waiter.
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

  /** The waiter whose turn it is, left in place. */
  peek(): W | undefined {
    const party = this.ring[0];
    return party === undefined ? undefined : this.byParty.get(party)?.[0];
  }

  /** Remove the waiter whose turn it is; its party goes to the back of the round. */
  shift(): W | undefined {
    const party = this.ring.shift();
    if (party === undefined) return undefined;
    const queue = this.byParty.get(party)!;
    const waiter = queue.shift();
    this.size--;
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
