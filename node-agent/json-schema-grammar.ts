/**
 * A client's JSON schema (response_format.json_schema.schema, tools[i].function.parameters) to the schema
 * node-llama-cpp turns into a grammar, refusing every keyword the grammar cannot enforce, so an answer
 * that follows the grammar is always valid against the client's schema (docs/decisions.md, "Structured
 * output and tool calls"):
 * - supported: type (one, or a list of scalar types), properties, required, additionalProperties false,
 *   items, prefixItems, minItems, maxItems, minLength, maxLength, format date-time/date/time, enum and
 *   const of scalars, anyOf, $ref into $defs/definitions, and annotations (title, description, …);
 * - every property is written, in the schema's order, so `required` always holds;
 * - integers are written with at most 15 digits and no exponent, so they are safe integers (zod's z.int()
 *   range, ±(2^53 − 1), is accepted as minimum/maximum);
 * - anything else (pattern, minimum, oneOf, allOf, additionalProperties true, recursion, …) is refused.
 * - the work is bounded: enum ≤ 1,000 values and 64 KB, type lists without repeats, required no longer
 *   than properties, 32 levels, and 2,000 parts (after $ref) for all the schemas of a request together.
 * The grammar's longest answer, in tokens, is bounded by its UTF-8 bytes (a token the grammar accepts is
 * at least one byte): `fitSchema` gives strings and arrays without a stated bound an implicit one so the
 * longest answer fits the request's room, and refuses a schema whose stated bounds cannot fit.
 */
import type { GbnfJsonSchema, Llama, LlamaGrammar } from "node-llama-cpp";

/** A schema Pomona cannot enforce or fit; `param` names it as OpenAI names parameters. */
export class SchemaRefusedError extends Error {
  readonly param: string;
  constructor(param: string, message: string) {
    super(message);
    this.param = param;
  }
}

/** The translated schema: node-llama-cpp's form, with the bounds the client left open marked. */
export type GrammarNode =
  | { kind: "scalar"; type: "number" | "integer" | "boolean" | "null" }
  | { kind: "string"; minLength: number; maxLength: number | undefined; format?: "date-time" | "date" | "time" }
  | { kind: "literal"; values: readonly (string | number | boolean | null)[] }
  | { kind: "object"; properties: [string, GrammarNode][] }
  | {
      kind: "array";
      prefix: GrammarNode[];
      items: GrammarNode | undefined;
      minItems: number;
      maxItems: number | undefined;
    }
  | { kind: "anyOf"; options: GrammarNode[] }
  | { kind: "types"; types: ("string" | "number" | "integer" | "boolean" | "null")[] };

const ANNOTATIONS = new Set([
  "title",
  "description",
  "$schema",
  "$id",
  "$comment",
  "examples",
  "default",
  "deprecated",
  "readOnly",
  "writeOnly",
  "$defs",
  "definitions",
]);
const KEYWORDS: Record<string, Set<string>> = {
  string: new Set(["type", "minLength", "maxLength", "format"]),
  number: new Set(["type"]),
  integer: new Set(["type", "minimum", "maximum"]),
  boolean: new Set(["type"]),
  null: new Set(["type"]),
  object: new Set(["type", "properties", "required", "additionalProperties"]),
  array: new Set(["type", "items", "prefixItems", "minItems", "maxItems"]),
};
const MAX_SAFE_INTEGER = 9007199254740991;
const SCALARS = new Set(["string", "number", "integer", "boolean", "null"]);
const FORMATS = new Set(["date-time", "date", "time"]);
/** Deeper schemas are refused: the translation recurses, and no real answer format nests this far. */
const MAX_DEPTH = 32;
/** Parts (after $ref) of all the schemas of one request together: every tool's parameters, or the format. */
export const MAX_NODES = 2_000;
/** Bounds on what a single keyword may list, so a hostile list costs no more than a real one. */
const MAX_ENUM_VALUES = 1_000;
const MAX_ENUM_BYTES = 64 * 1024;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const count = (v: unknown, where: string, refuse: (m: string) => never): number => {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) refuse(`${where} must be a non-negative integer`);
  return v;
};

/** The parts all the schemas of one request may still have: pass one to every translateSchema of a request. */
export class SchemaBudget {
  nodes = MAX_NODES;
}

/**
 * Translate `schema`; `param` is what a 400 names (e.g. `tools[0].function.parameters`). `budget` is
 * shared by the request's schemas, so many tools cannot each bring the largest schema.
 */
export function translateSchema(schema: unknown, param: string, budget = new SchemaBudget()): GrammarNode {
  const root = schema;
  const defsOf = (name: "$defs" | "definitions") =>
    isObject(root) && isObject(root[name]) ? (root[name] as Record<string, unknown>) : {};
  const refuse = (path: string, message: string): never => {
    throw new SchemaRefusedError(param, `${param}${path ? ` at ${path}` : ""}: ${message}`);
  };

  const walk = (node: unknown, path: string, depth: number, refs: readonly string[]): GrammarNode => {
    const no = (message: string) => refuse(path, message);
    if (depth > MAX_DEPTH) no(`schemas nested deeper than ${MAX_DEPTH} levels are not supported`);
    // $ref is inlined, so a small schema can stand for a huge one: the grammar's size is bounded here.
    if (--budget.nodes < 0)
      no(`a request's schemas may have at most ${MAX_NODES} parts in all (after $ref); this one has more`);
    if (!isObject(node)) return no("a schema must be a JSON object");
    if (typeof node.$ref === "string") {
      const ref = node.$ref;
      if (refs.includes(ref)) no(`the recursive reference ${ref} has no longest answer, so it cannot be enforced`);
      const match = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref);
      const target = ref === "#" ? root : match ? defsOf(match[1] as "$defs")[match[2]!] : undefined;
      if (target === undefined) no(`$ref ${ref} does not name an entry of $defs or definitions`);
      for (const key of Object.keys(node))
        if (key !== "$ref" && !ANNOTATIONS.has(key)) no(`${key} next to $ref is not supported`);
      return walk(target, path, depth + 1, [...refs, ref]);
    }
    if (Array.isArray(node.anyOf)) {
      for (const key of Object.keys(node))
        if (key !== "anyOf" && !ANNOTATIONS.has(key)) no(`${key} next to anyOf is not supported`);
      if (node.anyOf.length === 0) no("anyOf must not be empty");
      return {
        kind: "anyOf",
        options: node.anyOf.map((o, i) => walk(o, `${path}.anyOf[${i}]`, depth + 1, refs)),
      };
    }
    if ("const" in node || "enum" in node) {
      const values = "const" in node ? [node.const] : node.enum;
      if (!Array.isArray(values) || values.length === 0) return no("enum must be a non-empty list");
      if (values.length > MAX_ENUM_VALUES) no(`enum may list at most ${MAX_ENUM_VALUES} values`);
      let bytes = 0;
      for (const v of values) {
        if (v !== null && !["string", "number", "boolean"].includes(typeof v))
          no("enum and const values must be strings, numbers, booleans or null");
        bytes += literalBytes(v as string);
      }
      if (bytes > MAX_ENUM_BYTES) no(`enum values may take at most ${MAX_ENUM_BYTES} bytes of JSON in all`);
      for (const key of Object.keys(node))
        if (!["const", "enum", "type"].includes(key) && !ANNOTATIONS.has(key))
          no(`${key} next to enum or const is not supported`);
      return { kind: "literal", values: values as (string | number | boolean | null)[] };
    }
    const type = node.type;
    if (Array.isArray(type)) {
      if (type.length === 0 || !type.every((t) => typeof t === "string" && SCALARS.has(t)))
        no("a list of types may hold only string, number, integer, boolean and null");
      if (new Set(type).size !== type.length) no("a list of types must not repeat a type");
      for (const key of Object.keys(node))
        if (key !== "type" && !ANNOTATIONS.has(key)) no(`${key} with a list of types is not supported`);
      return { kind: "types", types: type as ("string" | "number" | "integer" | "boolean" | "null")[] };
    }
    if (typeof type !== "string" || !(type in KEYWORDS))
      return no(
        "every schema needs a type (string, number, integer, boolean, null, object or array), enum, const, anyOf or $ref",
      );
    for (const key of Object.keys(node))
      if (!KEYWORDS[type]!.has(key) && !ANNOTATIONS.has(key))
        no(`${key} is not supported for type ${type}: the grammar cannot enforce it`);
    if (type === "integer" && (node.minimum !== undefined || node.maximum !== undefined)) {
      // zod writes z.int() as the safe-integer range; the grammar writes integers of at most 15 digits.
      if (!(Number(node.minimum) <= -MAX_SAFE_INTEGER && Number(node.maximum) >= MAX_SAFE_INTEGER))
        no("minimum and maximum are supported for integers only as the safe-integer range (±9007199254740991)");
    }
    switch (type) {
      case "string": {
        if (node.format !== undefined && !FORMATS.has(node.format as string))
          no(`format ${JSON.stringify(node.format)} is not supported (only date-time, date and time)`);
        if (node.format !== undefined && (node.minLength !== undefined || node.maxLength !== undefined))
          no("minLength and maxLength are not supported with format");
        const minLength = node.minLength === undefined ? 0 : count(node.minLength, "minLength", no);
        const maxLength = node.maxLength === undefined ? undefined : count(node.maxLength, "maxLength", no);
        if (maxLength !== undefined && maxLength < minLength) no("maxLength is less than minLength");
        return {
          kind: "string",
          minLength,
          maxLength: node.format !== undefined ? 0 : maxLength,
          ...(node.format !== undefined ? { format: node.format as "date-time" } : {}),
        };
      }
      case "object": {
        if (node.additionalProperties !== undefined && node.additionalProperties !== false)
          no("additionalProperties other than false is not supported: set it to false and list the properties");
        if (node.properties !== undefined && !isObject(node.properties)) no("properties must be an object");
        const properties = Object.entries((node.properties ?? {}) as Record<string, unknown>).map(
          ([name, sub]): [string, GrammarNode] => [name, walk(sub, `${path}.properties.${name}`, depth + 1, refs)],
        );
        if (node.required !== undefined) {
          if (!Array.isArray(node.required)) return no("required must be a list");
          if (node.required.length > properties.length) no("required lists more names than there are properties");
          const names = new Set(properties.map(([p]) => p));
          for (const name of node.required)
            if (typeof name !== "string" || !names.has(name))
              no(`required names ${JSON.stringify(name)}, not a property`);
        }
        return { kind: "object", properties };
      }
      case "array": {
        if (node.items === false && node.prefixItems === undefined) no("items: false needs prefixItems");
        const prefix = Array.isArray(node.prefixItems)
          ? node.prefixItems.map((p, i) => walk(p, `${path}.prefixItems[${i}]`, depth + 1, refs))
          : [];
        const items =
          node.items === undefined || node.items === false
            ? undefined
            : walk(node.items, `${path}.items`, depth + 1, refs);
        if (items === undefined && node.items === undefined && prefix.length === 0)
          no("an array needs items (a schema for its elements)");
        const minItems = node.minItems === undefined ? 0 : count(node.minItems, "minItems", no);
        let maxItems = node.maxItems === undefined ? undefined : count(node.maxItems, "maxItems", no);
        if (items === undefined) maxItems = Math.min(maxItems ?? prefix.length, prefix.length);
        if (maxItems !== undefined && maxItems < minItems) no("maxItems is less than minItems");
        return { kind: "array", prefix, items, minItems, maxItems };
      }
      default:
        return { kind: "scalar", type: type as "number" };
    }
  };
  return walk(schema, "", 0, []);
}

/** Upper bounds, in UTF-8 bytes, of what node-llama-cpp's JSON grammar writes for each part. */
const NUMBER_BYTES = 52; // "-" 16 digits "." 16 digits "e-" 16 digits (GbnfNumber)
const INTEGER_BYTES = 16; // "-" and up to 15 digits (INTEGER_RULE)
const FORMAT_BYTES = 40;
/** A string's character may be written as a \uXXXX escape. */
const BYTES_PER_CHAR = 6;
/**
 * Whitespace before a member: a newline and four spaces per nesting level, or one space (GbnfWhitespace).
 * A member costs that, its key, `:` and one optional space, its value and a comma.
 */
const space = (depth: number) => 1 + 4 * depth;
/** The four newlines node-llama-cpp's JSON grammar ends with. */
export const GRAMMAR_TRAILER_BYTES = 4;

const scalarBytes = (t: string) =>
  t === "number" ? NUMBER_BYTES : t === "integer" ? INTEGER_BYTES : t === "boolean" ? 5 : t === "null" ? 4 : Infinity;
const literalBytes = (v: string | number | boolean | null) => Buffer.byteLength(JSON.stringify(v));

/**
 * The longest answer `node` allows, in bytes, when strings and arrays without a stated bound hold at most
 * `cap` characters or elements (at least their minimum). Infinity for an unbounded string in `types`.
 */
export function longestAnswer(node: GrammarNode, cap: number, depth = 0): number {
  switch (node.kind) {
    case "scalar":
      return scalarBytes(node.type);
    // reduce, not Math.max(...list): a spread of a long list overflows the call stack.
    case "types":
      return node.types.reduce<number>(
        (m, t) => Math.max(m, t === "string" ? 2 + BYTES_PER_CHAR * cap : scalarBytes(t)),
        0,
      );
    case "literal":
      return node.values.reduce<number>((m, v) => Math.max(m, literalBytes(v)), 0);
    case "string":
      return node.format ? FORMAT_BYTES : 2 + BYTES_PER_CHAR * (node.maxLength ?? Math.max(node.minLength, cap));
    case "anyOf":
      return node.options.reduce((m, o) => Math.max(m, longestAnswer(o, cap, depth)), 0);
    case "object":
      return (
        2 +
        space(depth) +
        node.properties.reduce(
          (sum, [name, sub]) => sum + space(depth + 1) + literalBytes(name) + 3 + longestAnswer(sub, cap, depth + 1),
          0,
        )
      );
    case "array": {
      const n = node.maxItems ?? Math.max(node.minItems, cap);
      const member = (item: GrammarNode) => space(depth + 1) + 1 + longestAnswer(item, cap, depth + 1);
      let sum = 2 + space(depth);
      for (const item of node.prefix.slice(0, n)) sum += member(item);
      const rest = n - Math.min(n, node.prefix.length);
      return rest > 0 && node.items ? sum + rest * member(node.items) : sum;
    }
  }
}

/**
 * node-llama-cpp's schema for `node`, open bounds closed at `cap` (and at least the stated minimum). The
 * `types` form allows strings of up to `cap` characters through an anyOf of a bounded string and the rest.
 */
export function toGbnfSchema(node: GrammarNode, cap: number): GbnfJsonSchema {
  switch (node.kind) {
    case "scalar":
      return { type: node.type };
    case "types": {
      const others = node.types.filter((t) => t !== "string");
      if (others.length === node.types.length) return { type: node.types };
      const string: GbnfJsonSchema = { type: "string", maxLength: cap };
      return others.length === 0 ? string : { oneOf: [string, { type: others }] };
    }
    case "literal":
      return node.values.length === 1 ? { const: node.values[0]! } : { enum: node.values };
    case "string":
      if (node.format) return { type: "string", format: node.format };
      return { type: "string", minLength: node.minLength, maxLength: node.maxLength ?? Math.max(node.minLength, cap) };
    case "anyOf":
      return { oneOf: node.options.map((o) => toGbnfSchema(o, cap)) };
    case "object":
      return {
        type: "object",
        properties: Object.fromEntries(node.properties.map(([name, sub]) => [name, toGbnfSchema(sub, cap)])),
        additionalProperties: false,
      };
    case "array":
      return {
        type: "array",
        ...(node.prefix.length ? { prefixItems: node.prefix.map((p) => toGbnfSchema(p, cap)) } : {}),
        ...(node.items ? { items: toGbnfSchema(node.items, cap) } : {}),
        minItems: node.minItems,
        maxItems: node.maxItems ?? Math.max(node.minItems, cap),
      };
  }
}

/**
 * The largest implicit bound (up to `room` itself) for which the longest answer of `node`, plus the
 * grammar's trailer and `extraBytes`, fits in `room` tokens; undefined when even the smallest does not.
 */
export function fitCap(node: GrammarNode, room: number, extraBytes = 0): number | undefined {
  const fits = (cap: number) => longestAnswer(node, cap) + GRAMMAR_TRAILER_BYTES + extraBytes <= room;
  if (!fits(0)) return undefined;
  let low = 0;
  let high = Math.max(0, room);
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (fits(mid)) low = mid;
    else high = mid - 1;
  }
  return low;
}

/** Translate and fit in one step: the grammar schema, or a 400 naming `param` when it cannot fit `room`. */
export function fitSchema(schema: unknown, param: string, room: number): GbnfJsonSchema {
  const node = translateSchema(schema, param);
  const cap = fitCap(node, room);
  if (cap === undefined)
    throw new SchemaRefusedError(
      param,
      `${param}: its longest valid answer (${longestAnswer(node, 0) + GRAMMAR_TRAILER_BYTES} tokens at most) cannot fit in the ${room} tokens this request may generate; lower maxLength/maxItems, raise max_completion_tokens or shorten the prompt`,
    );
  return toGbnfSchema(node, cap);
}

/** node-llama-cpp's integer rule allows 16 digits and an exponent; Pomona's stays a safe integer. */
const INTEGER_RULE = 'integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,14})';

/** The GBNF node-llama-cpp makes for `schema`, with Pomona's integer rule; its root rule is `root`. */
export async function jsonSchemaGbnf(llama: Llama, schema: GbnfJsonSchema): Promise<string> {
  const grammar = await llama.createGrammarForJsonSchema<GbnfJsonSchema>(schema);
  return grammar.grammar.replace(/^integer-number-rule ::= .*$/m, INTEGER_RULE);
}

/** A grammar from `gbnf` that ends, as node-llama-cpp's JSON grammars do, at the four newlines after the value. */
export function jsonGrammar(llama: Llama, gbnf: string): Promise<LlamaGrammar> {
  return llama.createGrammar({ grammar: gbnf, stopGenerationTriggers: ["\n\n\n\n"], trimWhitespaceSuffix: true });
}
