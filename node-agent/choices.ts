/**
 * The `choices` of an OpenAI answer and of its stream chunks, for chat and legacy completions: one entry
 * per choice with its index, and `logprobs` in the endpoint's shape when the request asked for them.
 */
import { type ChatTurn, chatAnswer } from "./chat-turn.ts";
import type { ChoiceResult, FinishReason } from "./replica-engine.ts";
import { chatLogprobs, legacyLogprobs, type TokenLogprob } from "./token-probabilities.ts";

export type Kind = "chat" | "completion";

/**
 * The whole answer's choices: chat ones (a chat turn given) with their message, a tool call or text
 * (chat-turn.ts), legacy completions with their text. `promptChars` starts the legacy text offsets, as
 * OpenAI counts them.
 */
export function answerChoices(turn: ChatTurn | undefined, choices: ChoiceResult[], promptChars: number) {
  return choices.map((c) => {
    if (turn) {
      const { message, finishReason } = chatAnswer(turn, c.text, c.finishReason);
      return {
        index: c.index,
        message,
        logprobs: c.logprobs ? chatLogprobs(c.logprobs) : null,
        finish_reason: finishReason,
      };
    }
    return {
      index: c.index,
      text: c.text,
      logprobs: c.logprobs ? legacyLogprobs(c.logprobs, promptChars) : null,
      finish_reason: c.finishReason,
    };
  });
}

/**
 * Builds the stream's chunk choices. Legacy text offsets run on across a choice's chunks, so this keeps
 * each choice's position.
 */
export class StreamChoices {
  private readonly kind: Kind;
  private readonly offsets: number[] = [];
  private readonly promptChars: number;

  constructor(kind: Kind, promptChars: number) {
    this.kind = kind;
    this.promptChars = promptChars;
  }

  /** The chunk that opens a chat choice (OpenAI sends the role first, once per choice). */
  opening(index: number) {
    return { index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null };
  }

  text(index: number, text: string, logprobs: TokenLogprob[] | undefined) {
    if (this.kind === "chat")
      return {
        index,
        delta: { content: text },
        logprobs: logprobs ? chatLogprobs(logprobs) : null,
        finish_reason: null,
      };
    const offset = this.offsets[index] ?? this.promptChars;
    const legacy = logprobs ? legacyLogprobs(logprobs, offset) : null;
    this.offsets[index] = offset + (logprobs ? logprobs.reduce((n, e) => n + e.token.length, 0) : text.length);
    return { index, text, logprobs: legacy, finish_reason: null };
  }

  /** A choice's last chunk; `finishReason` overrides the generation's (a tool call ends with "tool_calls"). */
  finish(choice: ChoiceResult, finishReason: FinishReason | "tool_calls" = choice.finishReason) {
    return this.kind === "chat"
      ? { index: choice.index, delta: {}, logprobs: null, finish_reason: finishReason }
      : { index: choice.index, text: "", logprobs: null, finish_reason: choice.finishReason };
  }
}
