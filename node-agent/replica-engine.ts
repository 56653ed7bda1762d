/**
 * One loaded replica: its llama.cpp model, one context whose sequences are the replica's parallel slots,
 * and a lazily made embedding context. Everything node-llama-cpp does for a replica goes through here.
 */
import {
  GgufInsights,
  type Llama,
  LlamaCompletion,
  type LlamaContext,
  type LlamaEmbeddingContext,
  type LlamaGrammar,
  type LlamaModel,
  type LlamaText,
  readGgufFileInfo,
  type TokenBias,
} from "node-llama-cpp";
import { type EngineSettings, perSequenceContext } from "../crds/api/index.ts";
import { HistoryEraser } from "./history-eraser.ts";
import { type Gate, PacedSequence } from "./paced-sequence.ts";
import { ReplicaFailure } from "./replica-failure.ts";
import { SequencePool } from "./sequence-pool.ts";
import { ChoiceText } from "./stop-text.ts";
import { fastest, measureThreads, type ThreadMeasurement, threadCandidates } from "./thread-probe.ts";
import { type TokenLogprob, TokenProbabilities } from "./token-probabilities.ts";

export interface GenerationParams {
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  seed?: number;
  stop?: string[];
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** llama.cpp extensions. */
  topK?: number;
  minP?: number;
  tokenBias?: TokenBias;
  /** Report each kept token's log probability and this many alternatives (token-probabilities.ts). */
  logprobs?: { top: number };
  /** Choices to generate, one after another on the same sequence (1 when absent). */
  choices?: number;
  /** Holds the answer to a format: structured output and tool calls (chat-turn.ts). */
  grammar?: LlamaGrammar;
}

export type FinishReason = "stop" | "length";

export interface ChoiceResult {
  index: number;
  text: string;
  completionTokens: number;
  finishReason: FinishReason;
  /** The kept tokens' log probabilities, when asked for. */
  logprobs: TokenLogprob[] | undefined;
}

export interface GenerationResult {
  promptTokens: number;
  /** Summed over the choices, as OpenAI counts them. */
  completionTokens: number;
  choices: ChoiceResult[];
  aborted: boolean;
  /** Milliseconds from the call to the first generated token, when there was one. */
  firstTokenMs: number | undefined;
  /** Milliseconds from the call to the end of generation. */
  totalMs: number;
}

export class PromptTooLongError extends Error {
  readonly code = "context_length_exceeded";
}

/** Memory a replica needs, estimated from the GGUF header before anything is loaded. */
export async function estimateReplica(
  llama: Llama,
  path: string,
  engine: EngineSettings,
): Promise<{ architecture: string; memoryBytes: number; trainContextSize: number | undefined }> {
  let info: Awaited<ReturnType<typeof readGgufFileInfo>>;
  try {
    info = await readGgufFileInfo(path);
  } catch (err) {
    throw new ReplicaFailure("CorruptFile", `the model file is not a readable GGUF file: ${(err as Error).message}`);
  }
  const architecture = String(info.metadata?.general?.architecture ?? "");
  if (!architecture) throw new ReplicaFailure("CorruptFile", "the GGUF header names no architecture");
  const insights = await GgufInsights.from(info, llama);
  const gpuLayers = llama.gpu === false ? 0 : (engine.gpuLayers ?? insights.totalLayers);
  const model = await insights.estimateModelResourceRequirementsV2({ gpuLayers });
  const context = await insights.estimateContextResourceRequirementsV2({
    contextSize: perSequenceContext(engine),
    sequences: engine.parallelSequences,
    modelGpuLayers: gpuLayers,
    batchSize: engine.batchSize,
  });
  const memoryBytes = model.cpuRam + model.gpuVram + context.cpuRam + context.gpuVram;
  return { architecture, memoryBytes, trainContextSize: insights.trainContextSize };
}

export interface CompleteOptions {
  signal?: AbortSignal;
  /** Each piece of kept text, with its choice and (when asked for) its tokens' log probabilities. */
  onText?: (text: string, choice: number, logprobs: TokenLogprob[] | undefined) => void;
  /** Called as each choice ends, before the next one starts. */
  onChoiceEnd?: (choice: ChoiceResult) => void;
  /**
   * Called once the request is admitted — it holds a sequence or a place in the queue — and every check
   * that could refuse it (prompt length, a full queue, an unloading replica) has passed. Refusals are
   * thrown before it is called.
   */
  onAdmitted?: () => void;
  /** Awaited before each next token is decoded: the request's back-pressure (see paced-sequence.ts). */
  gate?: Gate;
}

export class ReplicaEngine {
  readonly model: LlamaModel;
  readonly context: LlamaContext;
  readonly pool: SequencePool<PacedSequence>;
  /** The threads the context decodes with, and how they were chosen. */
  readonly threads: number;
  readonly measuredThreads: ThreadMeasurement[];
  /** Gives each request's sequence a fresh history without waiting for the other sequences' generations. */
  private readonly eraser = new HistoryEraser();
  private embedding: Promise<LlamaEmbeddingContext> | undefined;
  private embedQueue: Promise<unknown> = Promise.resolve();

  private constructor(
    model: LlamaModel,
    context: LlamaContext,
    queueLimit: number,
    measuredThreads: ThreadMeasurement[],
  ) {
    this.model = model;
    this.context = context;
    this.threads = context.idealThreads;
    this.measuredThreads = measuredThreads;
    const sequences = Array.from(
      { length: context.totalSequences },
      () => new PacedSequence(context.getSequence(), this.eraser),
    );
    this.pool = new SequencePool(sequences, queueLimit);
  }

  /**
   * Load the model and make its serving context. Threads: spec.engine.threads when set, else the fastest
   * of the candidates up to `maxThreads`, measured on this model now (thread-probe.ts).
   */
  static async load(
    llama: Llama,
    path: string,
    engine: EngineSettings,
    options: { maxThreads: number; queueLimit: number },
  ): Promise<ReplicaEngine> {
    let model: LlamaModel | undefined;
    try {
      model = await llama.loadModel({
        modelPath: path,
        gpuLayers: llama.gpu === false ? 0 : (engine.gpuLayers ?? "auto"),
      });
      const candidates = threadCandidates(options.maxThreads);
      const measured =
        engine.threads === undefined && candidates.length > 1 ? await measureThreads(model, candidates) : [];
      const threads = engine.threads ?? (measured.length ? fastest(measured) : candidates[0]!);
      const context = await model.createContext({
        sequences: engine.parallelSequences,
        contextSize: perSequenceContext(engine),
        batchSize: engine.batchSize,
        threads,
      });
      return new ReplicaEngine(model, context, options.queueLimit, measured);
    } catch (err) {
      await model?.dispose().catch(() => {});
      throw new ReplicaFailure("LoadFailed", `llama.cpp could not load the model: ${(err as Error).message}`);
    }
  }

  /**
   * The prompt's tokens (its beginning-of-text token included) and the room a sequence leaves after them;
   * throws PromptTooLongError when it leaves none. The one prompt-length check, before admission.
   */
  measurePrompt(prompt: string | LlamaText): { promptTokens: number; room: number } {
    const tokens = typeof prompt === "string" ? this.model.tokenize(prompt) : prompt.tokenize(this.model.tokenizer);
    const promptTokens = tokens.length + (this.model.tokens.bos !== undefined ? 1 : 0);
    const room = this.context.contextSize - promptTokens;
    if (room < 1)
      throw new PromptTooLongError(
        `the prompt has ${promptTokens} tokens but a sequence of this model holds ${this.context.contextSize}`,
      );
    return { promptTokens, room };
  }

  /**
   * Generate from a prompt on a free sequence; the sequence goes back to the pool on every path. Refusals
   * (too long a prompt, a full queue, an unloading replica) throw before `onAdmitted` is called.
   */
  async complete(
    prompt: string | LlamaText,
    params: GenerationParams,
    options: CompleteOptions = {},
  ): Promise<GenerationResult> {
    const { promptTokens, room } = this.measurePrompt(prompt);
    const maxTokens = Math.min(params.maxTokens ?? room, room);
    // Time to first token counts the wait for a free sequence: that is what the caller feels.
    const started = performance.now();
    const place = this.pool.admit(options.signal);
    try {
      options.onAdmitted?.();
    } catch (err) {
      void place.then(
        (p) => this.pool.release(p),
        () => {},
      );
      throw err;
    }
    const paced = await place;
    const sequence = paced.sequence;
    let firstTokenMs: number | undefined;
    const probabilities = params.logprobs ? new TokenProbabilities(this.model, params.logprobs.top) : undefined;
    const completion = new LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false });
    const choices: ChoiceResult[] = [];
    let aborted = false;
    try {
      paced.setGate(options.gate);
      paced.setRecorder(
        probabilities
          ? { alternatives: probabilities.alternatives, record: (sampled) => probabilities.record(sampled) }
          : undefined,
      );
      // Erased when the previous request ended (below); this only catches an erase that failed then.
      await this.eraser.erase(sequence);
      const penalize = params.presencePenalty || params.frequencyPenalty;
      // Later choices reuse the prompt already in the sequence: LlamaCompletion keeps the common prefix.
      for (let index = 0; index < (params.choices ?? 1) && !aborted; index++) {
        // The earlier choice's tokens go, the prompt's stay (LlamaCompletion re-evaluates its last token): erased
        // here, beside the running generations, instead of by LlamaCompletion waiting for them to end.
        if (index > 0) await this.eraser.erase(sequence, promptTokens - 1);
        probabilities?.reset();
        let completionTokens = 0;
        // Stop strings are matched on the text as the client reads it (stop-text.ts); a match ends the
        // generation through its own abort signal.
        const output = new ChoiceText(params.stop ?? [], probabilities !== undefined);
        const stop = new AbortController();
        const { metadata } = await completion.generateCompletionWithMeta(prompt, {
          maxTokens,
          temperature: params.temperature,
          topP: params.topP,
          topK: params.topK,
          minP: params.minP,
          // Each choice its own seed, so a seeded request still gets different choices, reproducibly.
          seed: params.seed === undefined ? undefined : params.seed + index,
          tokenBias: params.tokenBias,
          grammar: params.grammar,
          repeatPenalty: penalize
            ? { presencePenalty: params.presencePenalty, frequencyPenalty: params.frequencyPenalty }
            : false,
          signal: options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal,
          stopOnAbortSignal: true,
          // onToken comes right before onTextChunk with the same kept tokens.
          onToken: (tokens) => {
            if (firstTokenMs === undefined) firstTokenMs = performance.now() - started;
            completionTokens += tokens.length;
            if (probabilities) output.addEntries(probabilities.take(tokens));
          },
          onTextChunk: (text) => {
            const step = output.push(text);
            if (step.text || step.logprobs?.length) options.onText?.(step.text, index, step.logprobs);
            if (step.stopped) stop.abort();
          },
        });
        aborted = metadata.stopReason === "abort" && !output.stopped;
        if (!output.stopped && !aborted) {
          const rest = output.end();
          if (rest.text || rest.logprobs?.length) options.onText?.(rest.text, index, rest.logprobs);
        }
        const choice: ChoiceResult = {
          index,
          text: output.text,
          completionTokens,
          // A stop string ends the generation as an abort, so it never reads as "maxTokens".
          finishReason: metadata.stopReason === "maxTokens" ? "length" : "stop",
          logprobs: output.logprobs,
        };
        choices.push(choice);
        if (!aborted) options.onChoiceEnd?.(choice);
      }
      return {
        promptTokens,
        completionTokens: choices.reduce((sum, c) => sum + c.completionTokens, 0),
        choices,
        aborted,
        firstTokenMs,
        totalMs: performance.now() - started,
      };
    } finally {
      paced.setGate(undefined);
      paced.setRecorder(undefined);
      completion.dispose({ disposeSequence: false });
      // The history goes as soon as the answer is over, not when the next request takes the sequence: the
      // next one then starts at once, and no request's state outlives it. Back in the pool once erased.
      void this.eraser
        .erase(sequence)
        .catch(() => {})
        .finally(() => this.pool.release(paced));
    }
  }

  /** Embeddings one input at a time: the embedding context has a single sequence. */
  async embed(inputs: string[]): Promise<{ vectors: number[][]; tokens: number }> {
    this.embedding ??= this.model.createEmbeddingContext({
      contextSize: Math.min(this.context.contextSize, this.model.trainContextSize),
      threads: this.threads,
    });
    const context = await this.embedding;
    const run = this.embedQueue.then(async () => {
      const vectors: number[][] = [];
      let tokens = 0;
      for (const input of inputs) {
        const tokenized = this.model.tokenize(input);
        if (tokenized.length > context.model.trainContextSize)
          throw new PromptTooLongError(`an input has ${tokenized.length} tokens, more than the model's context`);
        tokens += tokenized.length;
        vectors.push([...(await context.getEmbeddingFor(tokenized)).vector]);
      }
      return { vectors, tokens };
    });
    this.embedQueue = run.catch(() => {});
    return run;
  }

  /** Generate a short text once to warm the caches, and measure single-sequence tokens per second. */
  async warmUp(): Promise<number> {
    await this.complete("Once upon a time", { maxTokens: 8, temperature: 0 });
    const started = performance.now();
    const result = await this.complete("Once upon a time", { maxTokens: 48, temperature: 0 });
    const seconds = (performance.now() - started) / 1000;
    return result.completionTokens > 0 ? Math.round((result.completionTokens / seconds) * 10) / 10 : 0;
  }

  async dispose(): Promise<void> {
    this.pool.close();
    if (this.embedding) await (await this.embedding.catch(() => undefined))?.dispose();
    await this.context.dispose();
    await this.model.dispose();
  }
}
