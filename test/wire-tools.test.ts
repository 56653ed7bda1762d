// Tool calls and structured output through /v1/responses and /v1/messages, with the official openai and
// @anthropic-ai/sdk clients, the real gateway and the real node-agent with llama.cpp on the fixture model:
// a call forced by the tool choice, its result sent back, and the final answer, streamed and not. The
// fixture writes nonsense, but the node's grammar holds every call to a declared function with arguments
// valid for its parameters, and structured output to its schema.
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { makeKey } from "./support/gateway.ts";
import { type InferenceStack, startInferenceStack } from "./support/inference-stack.ts";

const ns = "wire-tools";
const key = makeKey(ns, "t");
let stack: InferenceStack;
const openai = () => new OpenAI({ apiKey: key.secret, baseURL: `${stack.gateway.url}/v1`, maxRetries: 0 });
const anthropic = () =>
  new Anthropic({
    apiKey: null,
    authToken: null,
    baseURL: stack.gateway.url,
    defaultHeaders: { "x-api-key": key.secret },
    maxRetries: 0,
  });

beforeAll(async () => {
  // Tool definitions and their grammar need room: 1,024 tokens a sequence.
  stack = await startInferenceStack(ns, { keys: [key], contextSize: 2048 });
}, 300_000);
afterAll(async () => {
  await stack?.stop();
});

const weatherArgs = z.strictObject({ city: z.string().max(8), unit: z.enum(["C", "F"]) });
const weatherSchema = {
  type: "object",
  properties: { city: { type: "string", maxLength: 8 }, unit: { type: "string", enum: ["C", "F"] } },
  required: ["city", "unit"],
  additionalProperties: false,
};
const nameSchema = {
  type: "object",
  properties: { name: { type: "string", maxLength: 8 } },
  required: ["name"],
  additionalProperties: false,
};

describe("tools and structured output on /v1/responses", () => {
  const tools: OpenAI.Responses.FunctionTool[] = [
    { type: "function", name: "get_weather", description: "Weather", parameters: weatherSchema, strict: true },
  ];

  it("round-trips a function call: call, output, final answer", async () => {
    const first = await openai().responses.create({
      model: "stories",
      input: "Weather in Paris?",
      tools,
      tool_choice: { type: "function", name: "get_weather" },
      max_output_tokens: 200,
    });
    const call = first.output.find((o) => o.type === "function_call");
    expect(call?.type).toBe("function_call");
    if (call?.type !== "function_call") throw new Error("no function call");
    expect(call.name).toBe("get_weather");
    weatherArgs.parse(JSON.parse(call.arguments));
    const final = await openai().responses.create({
      model: "stories",
      input: [
        { role: "user", content: "Weather in Paris?" },
        ...(first.output as OpenAI.Responses.ResponseInputItem[]),
        { type: "function_call_output", call_id: call.call_id, output: JSON.stringify({ temperature: 21 }) },
      ],
      tools,
      tool_choice: "none",
      max_output_tokens: 16,
    });
    expect(final.output_text.length).toBeGreaterThan(0);
    expect(final.output.some((o) => o.type === "function_call")).toBe(false);
  });

  it("streams a function call's arguments into the final response", async () => {
    const stream = openai().responses.stream({
      model: "stories",
      input: "Weather in Paris?",
      tools,
      tool_choice: "required",
      max_output_tokens: 200,
    });
    let deltas = "";
    stream.on("response.function_call_arguments.delta", (e) => {
      deltas += e.delta;
    });
    const final = await stream.finalResponse();
    const call = final.output.find((o) => o.type === "function_call");
    if (call?.type !== "function_call") throw new Error("no function call");
    expect(call.arguments).toBe(deltas);
    weatherArgs.parse(JSON.parse(call.arguments));
  });

  it("follows text.format json_schema", async () => {
    const answer = await openai().responses.create({
      model: "stories",
      input: "Name a cat.",
      text: { format: { type: "json_schema", name: "cat", schema: nameSchema, strict: true } },
      max_output_tokens: 128,
    });
    z.strictObject({ name: z.string().max(8) }).parse(JSON.parse(answer.output_text));
  });
});

describe("tools and structured output on /v1/messages", () => {
  const tools: Anthropic.Tool[] = [
    { name: "get_weather", description: "Weather", input_schema: weatherSchema as Anthropic.Tool.InputSchema },
  ];

  it("round-trips a tool use: tool_use, tool_result, final answer", async () => {
    const first = await anthropic().messages.create({
      model: "stories",
      max_tokens: 200,
      messages: [{ role: "user", content: "Weather in Paris?" }],
      tools,
      tool_choice: { type: "tool", name: "get_weather" },
    });
    expect(first.stop_reason).toBe("tool_use");
    const use = first.content.find((b) => b.type === "tool_use");
    if (use?.type !== "tool_use") throw new Error("no tool use");
    expect(use.name).toBe("get_weather");
    weatherArgs.parse(use.input);
    const final = await anthropic().messages.create({
      model: "stories",
      max_tokens: 16,
      messages: [
        { role: "user", content: "Weather in Paris?" },
        { role: "assistant", content: first.content },
        { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "21 degrees" }] },
      ],
      tools,
      tool_choice: { type: "none" },
    });
    expect(final.content[0]?.type).toBe("text");
    expect(final.stop_reason).not.toBe("tool_use");
  });

  it("streams a tool use's input as input_json_delta into the final message", async () => {
    const stream = anthropic().messages.stream({
      model: "stories",
      max_tokens: 200,
      messages: [{ role: "user", content: "Weather in Paris?" }],
      tools,
      tool_choice: { type: "any" },
    });
    let json = "";
    stream.on("inputJson", (partial) => {
      json += partial;
    });
    const final = await stream.finalMessage();
    const use = final.content.find((b) => b.type === "tool_use");
    if (use?.type !== "tool_use") throw new Error("no tool use");
    expect(use.input).toEqual(JSON.parse(json));
    weatherArgs.parse(use.input);
    expect(final.stop_reason).toBe("tool_use");
  });

  it("follows output_config.format", async () => {
    const answer = await anthropic().messages.create({
      model: "stories",
      max_tokens: 128,
      messages: [{ role: "user", content: "Name a cat." }],
      output_config: { format: { type: "json_schema", schema: nameSchema } },
    });
    const text = answer.content.find((b) => b.type === "text");
    if (text?.type !== "text") throw new Error("no text");
    z.strictObject({ name: z.string().max(8) }).parse(JSON.parse(text.text));
  });
});
