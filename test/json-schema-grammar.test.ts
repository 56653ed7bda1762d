// The schema-to-grammar translation and sizing (node-agent/json-schema-grammar.ts) as plain functions,
// and the tool-call grammars of node-agent/tool-calls.ts run by real llama.cpp on the fixture model: the
// "auto" grammar's call branch (reached by biasing the first token towards "<", which the fixture never
// writes on its own) and its text branch, each parsed as the agent parses answers.
import { LlamaCompletion, type LlamaModel, TokenBias } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import type { ChatCompletionRequest } from "../crds/api/openai-requests.ts";
import {
  fitCap,
  fitSchema,
  GRAMMAR_TRAILER_BYTES,
  longestAnswer,
  SchemaBudget,
  SchemaRefusedError,
  translateSchema,
} from "../node-agent/json-schema-grammar.ts";
import { parseToolCalls, type ToolPlan, toolPlan } from "../node-agent/tool-calls.ts";
import { loadTinyModel } from "./support/tiny-model.ts";

const refusal = (schema: unknown) => {
  try {
    translateSchema(schema, "p");
  } catch (err) {
    expect(err).toBeInstanceOf(SchemaRefusedError);
    expect((err as SchemaRefusedError).param).toBe("p");
    return (err as Error).message;
  }
  throw new Error(`not refused: ${JSON.stringify(schema)}`);
};

describe("translating a schema", () => {
  it("refuses what a grammar cannot enforce, saying where", () => {
    expect(refusal({ type: "object", properties: { a: { type: "string", pattern: "x" } } })).toContain("properties.a");
    expect(refusal({ type: "number", minimum: 0 })).toContain("minimum");
    expect(refusal({ oneOf: [{ type: "string" }] })).toContain("type");
    expect(refusal({ type: "string", format: "email" })).toContain("format");
    expect(refusal({})).toContain("type");
    expect(refusal({ $ref: "#" })).toContain("recursive");
  });

  it("accepts zod's z.int() range, $defs and anyOf", () => {
    const node = translateSchema(z.toJSONSchema(z.object({ n: z.int(), kind: z.enum(["a", "b"]).nullable() })), "p");
    expect(node.kind).toBe("object");
    const viaRef = translateSchema(
      { $defs: { s: { type: "string", maxLength: 3 } }, type: "array", items: { $ref: "#/$defs/s" }, maxItems: 2 },
      "p",
    );
    expect(longestAnswer(viaRef, 0)).toBeGreaterThan(2 * 18);
  });

  it("bounds the work a hostile schema can cause", () => {
    // Each level references the next twice: 2^40 parts once inlined.
    const defs: Record<string, unknown> = { d40: { type: "string", maxLength: 1 } };
    for (let i = 39; i >= 0; i--)
      defs[`d${i}`] = { type: "array", prefixItems: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
    const started = performance.now();
    expect(refusal({ $defs: defs, $ref: "#/$defs/d0" })).toMatch(/parts|deeper/);
    // A huge stated bound is sized by arithmetic, not by walking a billion elements.
    expect(() => fitSchema({ type: "array", items: { type: "boolean" }, maxItems: 1e9 }, "p", 500)).toThrow(
      "cannot fit",
    );
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it("refuses keyword lists longer than any real schema has, with a 400, not a stack overflow", () => {
    // Sizing a 200,000-value enum with Math.max(...values) overflowed the call stack (a 500).
    const many = Array.from({ length: 200_000 }, (_, i) => i);
    expect(() => fitSchema({ enum: many }, "p", 1_000)).toThrow(SchemaRefusedError);
    expect(refusal({ enum: many })).toContain("at most 1000 values");
    expect(refusal({ enum: ["x".repeat(40_000), "y".repeat(40_000)] })).toContain("bytes");
    expect(refusal({ type: ["string", "string"] })).toContain("repeat");
    // A long enum within the bounds is sized by reduce.
    const ok = translateSchema({ enum: Array.from({ length: 1_000 }, (_, i) => `v${i}`) }, "p");
    expect(longestAnswer(ok, 0)).toBe(JSON.stringify("v999").length);
  });

  it("checks required against a set of the properties, and refuses more names than properties", () => {
    const properties = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`p${i}`, { type: "boolean" }]));
    const required = Object.keys(properties);
    expect(translateSchema({ type: "object", properties, required }, "p").kind).toBe("object");
    expect(refusal({ type: "object", properties, required: [...required, "p0"] })).toContain("more names");
    expect(refusal({ type: "object", properties: { a: { type: "null" } }, required: ["b"] })).toContain('"b"');
  });

  it("shares one budget of parts among a request's schemas", () => {
    const wide = {
      type: "object",
      properties: Object.fromEntries(Array.from({ length: 1_200 }, (_, i) => [`p${i}`, { type: "null" }])),
    };
    // Alone, each schema fits the budget; two of them in one request do not.
    translateSchema(wide, "a");
    const budget = new SchemaBudget();
    translateSchema(wide, "a", budget);
    expect(() => translateSchema(wide, "b", budget)).toThrow(/at most 2000 parts in all/);
  });

  it("closes open bounds to the largest that fits, and the longest answer then fits", () => {
    const node = translateSchema(
      { type: "object", properties: { a: { type: "string" }, b: { type: "array", items: { type: "string" } } } },
      "p",
    );
    for (const room of [60, 200, 1_000, 10_000]) {
      const cap = fitCap(node, room);
      expect(cap).toBeDefined();
      expect(longestAnswer(node, cap!) + GRAMMAR_TRAILER_BYTES).toBeLessThanOrEqual(room);
      expect(longestAnswer(node, cap! + 1) + GRAMMAR_TRAILER_BYTES).toBeGreaterThan(room);
    }
    expect(fitCap(node, 10)).toBeUndefined();
  });
});

describe("tool-call grammars on the fixture model", () => {
  let model: LlamaModel;
  beforeAll(async () => {
    model = await loadTinyModel();
  });
  afterAll(async () => {
    await model?.llama.dispose();
  });

  const body: ChatCompletionRequest = {
    model: "stories",
    messages: [{ role: "user", content: "Weather in Paris?" }],
    tools: [
      {
        type: "function",
        function: {
          name: "get_weather",
          parameters: {
            type: "object",
            properties: { city: { type: "string", maxLength: 8 }, days: { type: "integer" } },
            required: ["city", "days"],
          },
        },
      },
    ],
  };
  const Args = z.strictObject({ city: z.string().max(8), days: z.int() });

  async function generate(plan: ToolPlan, biasTowardsCall: boolean): Promise<string> {
    const context = await model.createContext({ contextSize: 512, threads: 1 });
    try {
      const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
      return await completion.generateCompletion("User: Weather in Paris?\nAssistant:", {
        grammar: plan.grammar,
        maxTokens: 300,
        temperature: 1,
        seed: 3,
        tokenBias: biasTowardsCall ? new TokenBias(model.tokenizer).set("<", { logit: 100 }) : undefined,
      });
    } finally {
      await context.dispose();
    }
  }

  it("under auto, a call is '<tool_call>' and valid calls; text never starts with '<'", async () => {
    const plan = await toolPlan(model.llama, body, 300);
    expect(plan?.mode).toBe("auto");
    const call = await generate(plan!, true);
    const calls = parseToolCalls(plan!, call);
    expect(calls?.length).toBeGreaterThanOrEqual(1);
    for (const c of calls!) {
      expect(c.function.name).toBe("get_weather");
      Args.parse(JSON.parse(c.function.arguments));
    }
    const text = await generate(plan!, false);
    expect(text.trimStart().startsWith("<")).toBe(false);
    expect(parseToolCalls(plan!, text)).toBeUndefined();
  });

  it("refuses function parameters that are not an object schema", async () => {
    const tool = (parameters: unknown) => ({
      ...body,
      tools: [
        body.tools![0]!,
        { type: "function" as const, function: { name: "f", parameters: parameters as Record<string, unknown> } },
      ],
    });
    for (const parameters of [
      { type: "string" },
      { type: "array", items: { type: "null" } },
      { anyOf: [{ type: "null" }] },
    ])
      await expect(toolPlan(model.llama, tool(parameters), 300)).rejects.toMatchObject({
        param: "tools[1].function.parameters",
        message: expect.stringContaining("function parameters must be an object schema"),
      });
    // A $ref to an object is an object schema.
    const viaRef = { $defs: { a: { type: "object", properties: {} } }, $ref: "#/$defs/a" };
    expect(await toolPlan(model.llama, tool(viaRef), 300)).toBeDefined();
  });

  it("shares one budget of parts among all the tools of a request", async () => {
    const parameters = {
      type: "object",
      properties: Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`p${i}`, { type: "boolean" }])),
    };
    const tools = Array.from({ length: 128 }, (_, i) => ({
      type: "function" as const,
      function: { name: `f${i}`, parameters },
    }));
    await expect(toolPlan(model.llama, { ...body, tools }, 300)).rejects.toThrow(/at most 2000 parts in all/);
  });

  it("under auto, a room too small for any call leaves text only; required refuses it", async () => {
    expect(await toolPlan(model.llama, body, 20)).toBeUndefined();
    await expect(toolPlan(model.llama, { ...body, tool_choice: "required" }, 20)).rejects.toMatchObject({
      param: "tools[0].function.parameters",
    });
  });
});
