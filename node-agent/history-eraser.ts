/**
 * Erases a sequence's history (its KV cache cells) without waiting for the other sequences of its context
 * to finish generating.
 *
 * Every request gets a fresh history: no cached prompt of an earlier request (maybe another key's) is
 * reused. node-llama-cpp erases under the context's lock, and its decode loop holds that same lock for as
 * long as any sequence has a decode queued, i.e. while any sequence keeps generating; so a plain
 * `clearHistory()` on a used sequence waits for the whole running generation of the others to end (measured:
 * a newcomer beside two 763-token generations got its first token after 2 s instead of a few ms, and
 * through `npm start` groups of streams waited one full generation for their first token).
 *
 * So while an erase is pending, each sequence of the context (paced-sequence.ts) waits on `held()` before
 * asking for its next token: no new decode is queued, the decode loop ends after its current step and
 * lets the lock go, the erase runs (a few µs), and the sequences go on. Each erase costs the others about
 * one decode step, instead of costing the newcomer all of their remaining tokens.
 */
import type { LlamaContextSequence } from "node-llama-cpp";

export class HistoryEraser {
  private pending = 0;
  private resumed: Promise<void> | undefined;
  private resume: (() => void) | undefined;

  /** Resolves once no erase is pending; undefined when none is (the common case costs nothing). */
  held(): Promise<void> | undefined {
    return this.resumed;
  }

  /**
   * Erase the sequence's history from token `from` on (all of it by default); returns at once when there is
   * nothing there.
   */
  async erase(sequence: LlamaContextSequence, from = 0): Promise<void> {
    const end = sequence.nextTokenIndex;
    if (end <= from) return;
    if (this.pending++ === 0) {
      this.resumed = new Promise((resolve) => {
        this.resume = resolve;
      });
    }
    try {
      if (from === 0) await sequence.clearHistory();
      else await sequence.eraseContextTokenRanges([{ start: from, end }]);
    } finally {
      if (--this.pending === 0) {
        this.resume?.();
        this.resumed = undefined;
        this.resume = undefined;
      }
    }
  }
}
