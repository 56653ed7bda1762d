/**
 * Stop strings matched on the generated text as the client reads it. node-llama-cpp's own stop detection
 * reads each token detokenized alone, and a SentencePiece token such as "▁was" then reads "was" without
 * its leading space, so a stop containing a space (" was", "Lily. She", " ") was never matched on
 * Llama/Mistral-family models. Here the text pieces, already detokenized in context, are fed in order.
 *
 * The matcher passes text on only once it can no longer be the start of a stop string: the tail that
 * could still grow into one is held back, so a streamed client never sees any part of a stop string. The
 * held tail is shorter than the longest stop string, which bounds what is held.
 */
import { type TokenLogprob, truncated } from "./token-probabilities.ts";

export interface StopTextStep {
  /** Text now safe to pass on; when `stopped`, the last text before the stop. */
  text: string;
  /** A stop string is complete: the answer ends before it, and nothing after it is passed on. */
  stopped: boolean;
}

export class StopTextMatcher {
  private readonly stops: readonly string[];
  private readonly longest: number;
  private held = "";
  private done = false;

  /**
   * Empty stop strings are ignored (the request schema refuses them anyway), and so are ones with a lone
   * surrogate: generated text is well-formed, so such a stop could only match half of a character.
   */
  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0 && s.isWellFormed());
    this.longest = Math.max(0, ...this.stops.map((s) => s.length));
  }

  get stopped(): boolean {
    return this.done;
  }

  /**
   * The next piece of generated text. The answer ends at the first stop string to be completed, at the
   * earliest place it starts; text after it is never passed on.
   */
  push(piece: string): StopTextStep {
    if (this.done) return { text: "", stopped: true };
    const text = this.held + piece;
    let cut = -1;
    for (const stop of this.stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.done = true;
      this.held = "";
      return { text: text.slice(0, cut), stopped: true };
    }
    const keep = this.heldFrom(text);
    this.held = text.slice(keep);
    return { text: text.slice(0, keep), stopped: false };
  }

  /** The end of generation without a stop: the held tail was no stop after all. */
  flush(): string {
    const rest = this.held;
    this.held = "";
    return rest;
  }

  /** Where the longest tail of `text` that begins some stop string starts (text.length when none does). */
  private heldFrom(text: string): number {
    for (let from = Math.max(0, text.length - this.longest + 1); from < text.length; from++) {
      const tail = text.slice(from);
      if (this.stops.some((s) => s.startsWith(tail))) return from;
    }
    return text.length;
  }
}

/** A logprob entry waiting for its text to be passed on: [start, end) in the choice's generated text. */
interface HeldEntry {
  entry: TokenLogprob;
  start: number;
  end: number;
  /** Its text is exactly that span (not so when a token is part of a multi-byte character). */
  exact: boolean;
}

/**
 * One choice's text and log-probability entries on their way to the client, ended by the first stop
 * string. Entries go out with the text they read as, so each entry is passed on once all its text is; at
 * a stop, the entries before it are kept and a token the stop starts inside keeps the part of its text
 * before the stop, so the entries' texts joined are the answer's text.
 */
export class ChoiceText {
  private readonly matcher: StopTextMatcher;
  private readonly held: HeldEntry[] = [];
  private next: TokenLogprob[] = [];
  private received = 0;
  private passed = 0;
  private readonly pieces: string[] = [];
  private readonly entries: TokenLogprob[] | undefined;

  constructor(stops: readonly string[], logprobs: boolean) {
    this.matcher = new StopTextMatcher(stops);
    this.entries = logprobs ? [] : undefined;
  }

  get stopped(): boolean {
    return this.matcher.stopped;
  }

  /** The whole text passed on so far: the answer, once generation ended. */
  get text(): string {
    return this.pieces.join("");
  }

  /** Every entry passed on so far, when logprobs were asked for. */
  get logprobs(): TokenLogprob[] | undefined {
    return this.entries;
  }

  /** The entries of the tokens whose text comes with the next `push`. */
  addEntries(entries: TokenLogprob[]): void {
    this.next.push(...entries);
  }

  /** The next piece of generated text; returns what to pass on now. */
  push(piece: string): StopTextStep & { logprobs: TokenLogprob[] | undefined } {
    this.hold(piece);
    const step = this.matcher.push(piece);
    return { ...step, logprobs: this.pass(step.text, step.stopped) };
  }

  /** Generation ended without a stop string: the held tail goes out. */
  end(): { text: string; logprobs: TokenLogprob[] | undefined } {
    const text = this.matcher.flush();
    return { text, logprobs: this.pass(text, true) };
  }

  private hold(piece: string): void {
    const exact = this.next.reduce((n, e) => n + e.token.length, 0) === piece.length;
    let at = this.received;
    for (const entry of this.next) {
      const end = exact ? at + entry.token.length : this.received + piece.length;
      this.held.push({ entry, start: exact ? at : this.received, end, exact });
      at = end;
    }
    this.next = [];
    this.received += piece.length;
  }

  /** Passes `text` on; `last` says no more text follows, so entries begun before its end go with it. */
  private pass(text: string, last: boolean): TokenLogprob[] | undefined {
    this.pieces.push(text);
    this.passed += text.length;
    if (!this.entries) return undefined;
    const out: TokenLogprob[] = [];
    while (this.held.length > 0) {
      const h = this.held[0]!;
      if (h.end <= this.passed) out.push(h.entry);
      else if (last && h.start < this.passed) out.push(h.exact ? truncated(h.entry, this.passed - h.start) : h.entry);
      else break;
      this.held.shift();
    }
    if (last) this.held.length = 0;
    this.entries.push(...out);
    return out;
  }
}
