// Stop strings matched on the generated text (node-agent/stop-text.ts): what a client is passed piece by
// piece, wherever the pieces split the text, and the logprob entries that go with it.
import { describe, expect, it } from "vitest";
import { ChoiceText, StopTextMatcher } from "../node-agent/stop-text.ts";
import type { TokenLogprob } from "../node-agent/token-probabilities.ts";

/** Feeds the pieces in order; returns what was passed on after each, and whether a stop ended it. */
function run(stops: string[], pieces: string[]) {
  const matcher = new StopTextMatcher(stops);
  const passed: string[] = [];
  let stopped = false;
  for (const piece of pieces) {
    const step = matcher.push(piece);
    passed.push(step.text);
    if (step.stopped) {
      stopped = true;
      break;
    }
  }
  if (!stopped) passed.push(matcher.flush());
  return { text: passed.join(""), passed, stopped };
}

/** Every way to cut `text` into pieces at up to two places (the empty piece included). */
function splits(text: string): string[][] {
  const out: string[][] = [];
  for (let a = 0; a <= text.length; a++)
    for (let b = a; b <= text.length; b++) out.push([text.slice(0, a), text.slice(a, b), text.slice(b)]);
  return out;
}

const STORY = ", there was a little girl named Lily. She loved to play";

describe("StopTextMatcher", () => {
  it.each([
    [" was", ", there"],
    ["Lily. She", ", there was a little girl named "],
    [" ", ","],
    ["was", ", there "],
    [".", ", there was a little girl named Lily"],
  ])("cuts %j before the stop wherever the pieces split, and never passes on a part of it", (stop, answer) => {
    for (const pieces of splits(STORY)) {
      const { text, passed, stopped } = run([stop], pieces);
      expect({ pieces, text, stopped }).toEqual({ pieces, text: answer, stopped: true });
      // What had gone out after each piece was already part of the answer: no stop text was ever seen.
      let sofar = "";
      for (const p of passed) {
        sofar += p;
        expect(answer.startsWith(sofar)).toBe(true);
      }
    }
  });

  it("passes the whole text on when no stop string completes, holding back only a possible start", () => {
    for (const pieces of splits("the cat sat on the mat; the end")) {
      const { text, stopped } = run(["the dog", "mat."], pieces);
      expect({ pieces, text, stopped }).toEqual({ pieces, text: "the cat sat on the mat; the end", stopped: false });
    }
    const matcher = new StopTextMatcher(["the dog"]);
    expect(matcher.push("on the d")).toEqual({ text: "on ", stopped: false });
    expect(matcher.push("og")).toEqual({ text: "", stopped: true });
    // Whatever comes after a stop is never passed on.
    expect(matcher.push("more")).toEqual({ text: "", stopped: true });
  });

  it("holds back less than the longest stop string", () => {
    const matcher = new StopTextMatcher(["abcdef"]);
    expect(matcher.push("xxabcde")).toEqual({ text: "xx", stopped: false });
    expect(matcher.push("abcde")).toEqual({ text: "abcde", stopped: false });
    expect(matcher.flush()).toBe("abcde");
  });

  it("finds a stop whose start overlaps an earlier false start", () => {
    for (const pieces of splits("aaab!")) expect(run(["aab"], pieces).text).toBe("a");
    for (const pieces of splits("xababab")) expect(run(["abab"], pieces).text).toBe("x");
    for (const pieces of splits("x<<<|end")) expect(run(["<<|end"], pieces).text).toBe("x<");
  });

  it("ends at the earliest stop of several, and at the first one completed", () => {
    for (const pieces of splits(STORY)) {
      expect(run(["girl", " a ", "Lily"], pieces).text).toBe(", there was");
    }
    // "c" completes while "abcd" is still only possible: the answer ends at once, before "c".
    expect(run(["abcd", "c"], ["ab", "c", "d"]).text).toBe("ab");
    expect(run(["abcd", "c"], ["abcd"]).text).toBe("");
  });

  it("ends with an empty answer when the text starts with a stop", () => {
    for (const pieces of splits("Once upon")) {
      expect(run(["Once"], pieces)).toMatchObject({ text: "", stopped: true });
    }
    expect(run([" "], [" Once"])).toMatchObject({ text: "", stopped: true });
  });

  it("keeps characters outside the Basic Multilingual Plane whole, and matches stops made of them", () => {
    const text = "café 😀 fin 🎉!";
    for (const pieces of splits(text).filter((p) => p.every((s) => s.isWellFormed()))) {
      const result = run(["😀 f", "🎉!"], pieces);
      expect(result.text).toBe("café ");
      expect(result.passed.every((p) => p.isWellFormed())).toBe(true);
      expect(run(["é 😀"], pieces).text).toBe("caf");
    }
    // A stop that is half a character can only match half of one: it is never matched.
    expect(run(["\ude00"], ["😀!"])).toMatchObject({ text: "😀!", stopped: false });
  });
});

const entry = (token: string, logprob = -0.5): TokenLogprob => ({
  token,
  logprob,
  bytes: [...Buffer.from(token, "utf8")],
  top_logprobs: [{ token, logprob, bytes: [...Buffer.from(token, "utf8")] }],
});

/** Feeds tokens (each a chunk of its own) through a ChoiceText; returns what went out and the answer. */
function choiceOf(stops: string[], chunks: { text: string; tokens: string[] }[]) {
  const choice = new ChoiceText(stops, true);
  const streamed: { text: string; tokens: string[] }[] = [];
  for (const c of chunks) {
    choice.addEntries(c.tokens.map((t) => entry(t)));
    const step = choice.push(c.text);
    streamed.push({ text: step.text, tokens: step.logprobs!.map((e) => e.token) });
    if (step.stopped) break;
  }
  if (!choice.stopped) {
    const rest = choice.end();
    streamed.push({ text: rest.text, tokens: rest.logprobs!.map((e) => e.token) });
  }
  return { choice, streamed, tokens: choice.logprobs!.map((e) => e.token) };
}

const words = [",", " there", " was", " a", " little", " girl"];
const oneEach = words.map((w) => ({ text: w, tokens: [w] }));

describe("ChoiceText", () => {
  it("leaves the stop string's tokens out of the logprobs, as out of the text", () => {
    const { choice, tokens } = choiceOf([" was"], oneEach);
    expect(choice.text).toBe(", there");
    expect(tokens).toEqual([",", " there"]);
  });

  it("keeps the part before the stop of a token the stop starts inside", () => {
    const { choice, tokens } = choiceOf(["as a"], oneEach);
    expect(choice.text).toBe(", there w");
    expect(tokens).toEqual([",", " there", " w"]);
    expect(choice.logprobs!.at(-1)).toMatchObject({ token: " w", bytes: [32, 119], logprob: -0.5 });
  });

  it("sends each entry with the piece that completes its text, and all of them when no stop completes", () => {
    const { choice, streamed, tokens } = choiceOf(["little boy"], oneEach);
    expect(choice.text).toBe(words.join(""));
    expect(tokens).toEqual(words);
    // " little" waits for " girl" (it could have begun "little boy"), and its entry waits with it.
    // The last "l" waits too, until the end, and " girl"'s entry with it.
    expect(streamed.slice(4)).toEqual([
      { text: " ", tokens: [] },
      { text: "little gir", tokens: [" little"] },
      { text: "l", tokens: [" girl"] },
    ]);
  });

  it("sends a chunk's entries whole when their texts are not the chunk's (a character split over tokens)", () => {
    const chunks = [
      { text: "caf", tokens: ["caf"] },
      { text: "é!", tokens: ["\ufffd", "\ufffd!"] },
      { text: " more", tokens: [" more"] },
    ];
    const stopped = choiceOf(["!"], chunks);
    expect(stopped.choice.text).toBe("café");
    expect(stopped.tokens).toEqual(["caf", "\ufffd", "\ufffd!"]);
    expect(choiceOf([" more"], chunks).tokens).toEqual(["caf", "\ufffd", "\ufffd!"]);
  });
});
