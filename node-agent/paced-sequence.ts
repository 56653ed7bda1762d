/**
 * Back-pressure for one llama.cpp sequence. node-llama-cpp's LlamaCompletion calls its onToken/onTextChunk
 * callbacks synchronously and never waits for them, but it pulls every token from the sequence's
 * `evaluate()` async generator, and that generator decodes the next token only when it is asked for it.
 * So the sequence's `evaluate` is wrapped once: before asking for each next token it awaits the gate of
 * the request holding the sequence (e.g. "the client's socket has drained"). While the gate is shut
 * this sequence decodes nothing; the context's other sequences keep batching without it.
 *
 * The same wait covers the context's history eraser (history-eraser.ts): while it has an erase pending, no
 * sequence asks for its next token, so node-llama-cpp's decode loop lets go of the context's lock.
 *
 * When the request asked for log probabilities, the same wrapper reads each token through
 * `evaluateWithMetadata` (which plain `evaluate` calls too, without metadata) and hands the token's
 * probabilities to the request's recorder, so LlamaCompletion stays the one generation path.
 */
import type { LlamaContextSequence, Token } from "node-llama-cpp";
import type { HistoryEraser } from "./history-eraser.ts";
import type { SampledToken } from "./token-probabilities.ts";

/** Resolves when the sequence may decode its next token; rejecting ends the generation with that error. */
export type Gate = () => Promise<void> | undefined;

type Evaluate = LlamaContextSequence["evaluate"];
/**
 * Receives every token the sequence samples, with its probability, and the candidates' probabilities when
 * `alternatives` is set (llama.cpp then hands over the whole distribution, which costs time per token;
 * the recorder keeps only the few candidates it reports, so no distribution outlives its `record` call).
 */
export interface ProbabilityRecorder {
  alternatives: boolean;
  record: (sampled: SampledToken) => void;
}

export class PacedSequence {
  readonly sequence: LlamaContextSequence;
  private gate: Gate | undefined;
  private recorder: ProbabilityRecorder | undefined;

  constructor(sequence: LlamaContextSequence, eraser?: HistoryEraser) {
    this.sequence = sequence;
    const evaluate: Evaluate = sequence.evaluate.bind(sequence);
    const self = this;
    async function* recorded(tokens: Token[], options: Parameters<Evaluate>[1], record: ProbabilityRecorder) {
      const metadata = { confidence: true, probabilities: record.alternatives };
      const inner = sequence.evaluateWithMetadata(tokens, metadata, options);
      try {
        let input: Token | Token[] | undefined;
        for (;;) {
          const next = await inner.next(input);
          if (next.done) return;
          const { token, confidence, probabilities } = next.value as {
            token: Token;
            confidence: number;
            probabilities?: Map<Token, number>;
          };
          record.record({ token, probability: confidence, probabilities });
          input = (yield next.value.token) as Token | Token[] | undefined;
        }
      } finally {
        await inner.return();
      }
    }
    sequence.evaluate = async function* paced(tokens, options) {
      const inner = self.recorder ? recorded(tokens, options, self.recorder) : evaluate(tokens, options);
      try {
        let input: Token | Token[] | undefined;
        for (;;) {
          const next = await inner.next(input);
          if (next.done) return;
          input = (yield next.value) as Token | Token[] | undefined;
          await self.gate?.();
          await eraser?.held();
        }
      } finally {
        await inner.return();
      }
    };
  }

  /** The gate of the request now holding the sequence; undefined lets it run freely. */
  setGate(gate: Gate | undefined): void {
    this.gate = gate;
  }

  /** The log-probability recorder of the request now holding the sequence; undefined records nothing. */
  setRecorder(recorder: ProbabilityRecorder | undefined): void {
    this.recorder = recorder;
  }
}
