/**
 * response_format for chat: json_schema and json_object become a grammar the generation follows, sized so
 * the longest answer it allows fits the tokens the request may generate (json-schema-grammar.ts). A
 * schema the grammar cannot enforce, or cannot fit, is a 400 naming the parameter.
 */
import type { Llama, LlamaGrammar } from "node-llama-cpp";
import type { ResponseFormat } from "../crds/api/openai-requests.ts";
import { fitSchema, jsonGrammar, jsonSchemaGbnf, SchemaRefusedError } from "./json-schema-grammar.ts";

/** How deep json_object's any-JSON nests: bounded so its longest answer can be computed and fitted. */
const ANY_JSON_DEPTH = 3;
const STRING_CHAR = String.raw`([^"\\\x7F\x00-\x1F] | "\\" ["\\/bfnrt] | "\\u" [0-9a-fA-F]{4})`;
const NUMBER = `"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,16})?`;

/** Bytes of json_object's longest answer when strings hold `cap` characters and containers `cap` members. */
function anyJsonBytes(cap: number): number {
  const string = 2 + 6 * cap;
  let value = Math.max(string, 52, 5);
  for (let depth = ANY_JSON_DEPTH; depth >= 1; depth--) {
    const object = 2 + cap * (string + 3 + value + 2);
    const array = 2 + cap * (value + 2);
    value = depth === 1 ? object : Math.max(value, object, array);
  }
  return value;
}

/** GBNF for a JSON object nesting at most ANY_JSON_DEPTH levels, each string and container at most `cap` long. */
function anyJsonGrammar(cap: number): string {
  const repeat = (item: string) => (cap === 0 ? "" : `( ${item} ( "," [ ]? ${item} ){0,${cap - 1}} )?`);
  const lines = [
    `root ::= object1`,
    `string ::= "\\"" ${STRING_CHAR}{0,${cap}} "\\""`,
    `scalar ::= string | ${NUMBER} | "true" | "false" | "null"`,
  ];
  for (let depth = 1; depth <= ANY_JSON_DEPTH; depth++) {
    const value = depth === ANY_JSON_DEPTH ? "scalar" : `value${depth + 1}`;
    lines.push(`object${depth} ::= "{" [ ]? ${repeat(`string [ ]? ":" [ ]? ${value}`)} [ ]? "}"`);
    if (depth < ANY_JSON_DEPTH) {
      lines.push(`array${depth + 1} ::= "[" [ ]? ${repeat(`value${depth + 1}`)} [ ]? "]"`);
      lines.push(`value${depth + 1} ::= scalar | object${depth + 1} | array${depth + 1}`);
    }
  }
  return lines.join("\n");
}

/**
 * The grammar for a response_format, or undefined for text. `room` is the tokens the request may
 * generate; throws SchemaRefusedError (a 400) when the format cannot be enforced within it.
 */
export async function responseFormatGrammar(
  llama: Llama,
  format: ResponseFormat | undefined,
  room: number,
): Promise<LlamaGrammar | undefined> {
  if (!format || format.type === "text") return undefined;
  if (format.type === "json_schema") {
    const param = "response_format.json_schema.schema";
    if (!format.json_schema.schema) throw new SchemaRefusedError(param, `${param} is required`);
    return jsonGrammar(llama, await jsonSchemaGbnf(llama, fitSchema(format.json_schema.schema, param, room)));
  }
  let low = 0;
  let high = room;
  if (anyJsonBytes(0) > room)
    throw new SchemaRefusedError("response_format", "response_format: no JSON object fits this request's room");
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (anyJsonBytes(mid) <= room) low = mid;
    else high = mid - 1;
  }
  return llama.createGrammar({ grammar: anyJsonGrammar(low) });
}

/**
 * The note added to the system message. The schema itself is not written into the prompt, as llama-server
 * and Ollama do not: the grammar already fixes the keys and the structure, and on small contexts the
 * schema's text would take the room its answer needs. Clients that want the model to read descriptions
 * put them in their messages.
 */
export function responseFormatNote(format: ResponseFormat | undefined): string | undefined {
  if (!format || format.type === "text") return undefined;
  return "Answer in JSON.";
}
