/**
 * Function calling for chat (docs/decisions.md, "Tool calls and structured output: grammars sized to the request"). A tool call in
 * the generated text is `<tool_call>` followed by a JSON array of `{"name": …, "arguments": {…}}`, and a
 * grammar holds the model to it, so every call names a declared function and its arguments are valid
 * JSON for that function's parameters:
 * - tool_choice "required" or a named function: the answer must be the JSON array (no prefix);
 * - "auto": the answer is either `<tool_call>` and the array, or free text that does not start with "<"
 *   (both after up to four whitespace characters);
 *   a function whose call cannot fit the request's room is left out (none fits: text only);
 * - "none" (or no tools): no grammar, the tools are only shown to the model.
 * parallel_tool_calls false allows one call; otherwise as many (up to MAX_PARALLEL_CALLS) as fit the room.
 */
import { randomUUID } from "node:crypto";
import type { Llama, LlamaGrammar } from "node-llama-cpp";
import type { ChatCompletionRequest, FunctionTool } from "../crds/api/openai-requests.ts";
import {
  fitCap,
  GRAMMAR_TRAILER_BYTES,
  type GrammarNode,
  jsonGrammar,
  jsonSchemaGbnf,
  longestAnswer,
  SchemaBudget,
  SchemaRefusedError,
  toGbnfSchema,
  translateSchema,
} from "./json-schema-grammar.ts";

export const TOOL_CALL_PREFIX = "<tool_call>";
export const MAX_PARALLEL_CALLS = 8;
const noParameters = { type: "object", properties: {} };

export interface ToolCallOut {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export interface ToolPlan {
  /** "auto": a call starts with TOOL_CALL_PREFIX; "required": the whole answer is the calls. */
  mode: "auto" | "required";
  grammar: LlamaGrammar;
  maxCalls: number;
}

/** How the model is told to call functions; part of the prompt whenever tools are given. */
export function toolInstructions(tools: FunctionTool[]): string {
  const list = tools
    .map(
      (t) =>
        `${t.function.name}${t.function.description ? `: ${t.function.description}` : ""} ${JSON.stringify(t.function.parameters ?? noParameters)}`,
    )
    .join("\n");
  return `Functions:\n${list}\nTo call functions: ${TOOL_CALL_PREFIX}[{"name": …, "arguments": {…}}]`;
}

/** The calls' text as the model writes it, for assistant turns in the history. */
export function toolCallText(calls: { function: { name: string; arguments: string } }[]): string {
  const parsed = calls.map((c) => ({ name: c.function.name, arguments: parseArguments(c.function.arguments) }));
  return `${TOOL_CALL_PREFIX}${JSON.stringify(parsed)}`;
}

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function callsNode(tools: { name: string; parameters: GrammarNode }[], maxCalls: number): GrammarNode {
  return {
    kind: "array",
    prefix: [],
    items: {
      kind: "anyOf",
      options: tools.map((t) => ({
        kind: "object",
        properties: [
          ["name", { kind: "literal", values: [t.name] }],
          ["arguments", t.parameters],
        ],
      })),
    },
    minItems: 1,
    maxItems: maxCalls,
  };
}

/**
 * The grammar for a request's tools, or undefined when no call can be made (no tools, tool_choice none).
 * `room` is the tokens the request may generate. Throws SchemaRefusedError (a 400) for parameters the
 * grammar cannot enforce or that are not an object schema, a forced call that cannot fit, and a
 * tool_choice naming no declared function.
 */
export async function toolPlan(llama: Llama, body: ChatCompletionRequest, room: number): Promise<ToolPlan | undefined> {
  const tools = body.tools ?? [];
  // chat-turn.ts has refused tool_choice without tools.
  const choice = body.tool_choice ?? "auto";
  if (tools.length === 0 || choice === "none") return undefined;
  if (typeof choice === "object" && !tools.some((t) => t.function.name === choice.function.name))
    throw new SchemaRefusedError(
      "tool_choice.function.name",
      `tool_choice names ${choice.function.name}, which is not one of the request's tools`,
    );
  const names = new Set<string>();
  tools.forEach((t, index) => {
    if (names.has(t.function.name))
      throw new SchemaRefusedError(`tools[${index}].function.name`, `two tools are named ${t.function.name}`);
    names.add(t.function.name);
  });
  // One budget for every tool's parameters: many tools cannot each bring the largest schema.
  const budget = new SchemaBudget();
  const declared = tools.map((t, index) => {
    const param = `tools[${index}].function.parameters`;
    const parameters = translateSchema(t.function.parameters ?? noParameters, param, budget);
    // A call's arguments are an object: OpenAI's SDKs parse them as one, Anthropic's tool_use input is one.
    if (parameters.kind !== "object")
      throw new SchemaRefusedError(param, `${param}: function parameters must be an object schema`);
    return { index, name: t.function.name, parameters };
  });
  let translated = typeof choice === "object" ? declared.filter((t) => t.name === choice.function.name) : declared;
  const mode = choice === "auto" ? "auto" : "required";
  const prefixBytes = mode === "auto" ? 4 + TOOL_CALL_PREFIX.length : 0;
  // Under "auto" the model may also answer in text: a function whose call cannot fit is simply not
  // callable in this answer (no function fits: a text answer), rather than a refused request.
  if (mode === "auto") {
    translated = translated.filter((t) => fitCap(callsNode([t], 1), room, prefixBytes) !== undefined);
    if (translated.length === 0) return undefined;
  }
  const one = callsNode(translated, 1);
  const cap = fitCap(one, room, prefixBytes);
  if (cap === undefined) {
    // Name the function whose call alone cannot fit.
    const worst = translated.find((t) => fitCap(callsNode([t], 1), room, prefixBytes) === undefined) ?? translated[0]!;
    const param = `tools[${worst.index}].function.parameters`;
    throw new SchemaRefusedError(
      param,
      `${param}: a call to ${worst.name} with its longest valid arguments (${longestAnswer(callsNode([worst], 1), 0) + GRAMMAR_TRAILER_BYTES + prefixBytes} tokens at most) cannot fit in the ${room} tokens this request may generate; lower maxLength/maxItems, raise max_completion_tokens or shorten the prompt`,
    );
  }
  let maxCalls = 1;
  if (body.parallel_tool_calls !== false)
    for (let n = MAX_PARALLEL_CALLS; n > 1; n--)
      if (longestAnswer(callsNode(translated, n), cap) + GRAMMAR_TRAILER_BYTES + prefixBytes <= room) {
        maxCalls = n;
        break;
      }
  const json = await jsonSchemaGbnf(llama, toGbnfSchema(callsNode(translated, maxCalls), cap));
  if (mode === "required") return { mode, grammar: await jsonGrammar(llama, json), maxCalls };
  // Auto: the calls' grammar behind the prefix, or free text that cannot be mistaken for a call.
  const calls = json.replace(/^root ::= /m, "pomona-tool-calls ::= ");
  // Leading whitespace first: a model often starts its turn with a space (a space-prefixed token).
  const gbnf = [
    `root ::= pomona-space "${TOOL_CALL_PREFIX}" pomona-tool-calls | pomona-space pomona-text`,
    `pomona-space ::= [ \\t\\n]{0,4}`,
    `pomona-text ::= ([^< \\t\\n] [^\\x00]*)?`,
    calls,
  ].join("\n");
  return { mode, grammar: await jsonGrammar(llama, gbnf), maxCalls };
}

/**
 * The calls in a generated answer, or undefined when it is text — or calls cut short, which the sizing
 * rules out; should it happen (an abort), the text is answered as it is rather than as broken calls.
 */
export function parseToolCalls(plan: ToolPlan, text: string): ToolCallOut[] | undefined {
  let json = text.trim();
  if (plan.mode === "auto") {
    if (!json.startsWith(TOOL_CALL_PREFIX)) return undefined;
    json = json.slice(TOOL_CALL_PREFIX.length);
  }
  let calls: { name: string; arguments: unknown }[];
  try {
    calls = JSON.parse(json);
  } catch {
    return undefined;
  }
  return calls.map((c) => ({
    id: `call_${randomUUID().replaceAll("-", "").slice(0, 24)}`,
    type: "function",
    function: { name: c.name, arguments: JSON.stringify(c.arguments) },
  }));
}
