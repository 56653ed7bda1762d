// Tool calling on /v1/chat/completions through the real gateway and node-agent with llama.cpp on the
// fixture model, with the official openai client: a call forced by tool_choice, its result sent back,
// and the final answer, streamed and not. The fixture writes nonsense, but the grammar holds every call to
// a declared function with arguments valid for its parameters (node-agent/tool-calls.ts).
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { type StaticStack, startStaticStack } from "./support/static-stack.ts";

let stack: StaticStack;
beforeAll(async () => {
  stack = await startStaticStack();
}, 180_000);
afterAll(async () => {
  await stack?.close();
});

const weatherArgs = z.strictObject({
  city: z.string().max(8),
  unit: z.enum(["C", "F"]),
});
const tools: OpenAI.ChatCompletionTool[] = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Weather",
      parameters: {
        type: "object",
        properties: { city: { type: "string", maxLength: 8 }, unit: { type: "string", enum: ["C", "F"] } },
        required: ["city", "unit"],
        additionalProperties: false,
      },
      strict: true,
    },
  },
  {
    type: "function",
    function: { name: "get_time", parameters: { type: "object", properties: {} } },
  },
];
const question: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Weather in Paris?" }];

/** The node-agent's count of chat requests it refused with a 4xx before admission. */
async function rejectedChats(): Promise<number> {
  const text = await (await fetch(`${stack.agentUrl}/metrics`)).text();
  const line = text
    .split("\n")
    .find(
      (l) =>
        l.startsWith("pomona_node_requests_total{") &&
        l.includes('endpoint="chat"') &&
        l.includes('outcome="rejected"'),
    );
  return line ? Number(line.split(" ").at(-1)) : 0;
}

function checkCall(call: OpenAI.ChatCompletionMessageToolCall | undefined, name = "get_weather") {
  expect(call?.type).toBe("function");
  if (call?.type !== "function") throw new Error("not a function call");
  expect(call.id).toMatch(/^call_/);
  expect(call.function.name).toBe(name);
  const args = JSON.parse(call.function.arguments);
  if (name === "get_weather") weatherArgs.parse(args);
  else expect(args).toEqual({});
  return call;
}

describe("tool calls through the stack", () => {
  it("round-trips a call: tool call, tool result, final answer (not streamed)", async () => {
    const first = await stack.client.chat.completions.create({
      model: "stories",
      messages: question,
      tools,
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_completion_tokens: 200,
    });
    const choice = first.choices[0]!;
    expect(choice.finish_reason).toBe("tool_calls");
    expect(choice.message.content).toBeNull();
    const call = checkCall(choice.message.tool_calls?.[0]);
    expect(first.usage?.prompt_tokens).toBeGreaterThan(0);

    const final = await stack.client.chat.completions.create({
      model: "stories",
      messages: [
        ...question,
        choice.message,
        { role: "tool", tool_call_id: call.id, content: JSON.stringify({ temperature: 21, sky: "clear" }) },
      ],
      tools,
      tool_choice: "none",
      max_completion_tokens: 16,
    });
    expect(final.choices[0]?.finish_reason).toMatch(/^(stop|length)$/);
    expect(final.choices[0]?.message.tool_calls ?? []).toHaveLength(0);
    expect(final.choices[0]?.message.content?.length).toBeGreaterThan(0);
    // The tools and the tool result are prompt tokens too.
    expect(final.usage!.prompt_tokens).toBeGreaterThan(first.usage!.prompt_tokens);
  });

  it("round-trips a call streamed, in OpenAI's chunk format, read with the SDK's stream helper", async () => {
    const runner = stack.client.chat.completions.stream({
      model: "stories",
      messages: question,
      tools,
      tool_choice: "required",
      parallel_tool_calls: false,
      max_completion_tokens: 200,
    });
    const deltas: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
    let finish: string | null = null;
    runner.on("chunk", (chunk) => {
      deltas.push(...(chunk.choices[0]?.delta.tool_calls ?? []));
      finish = chunk.choices[0]?.finish_reason ?? finish;
    });
    const message = await runner.finalMessage();
    expect(finish).toBe("tool_calls");
    // The first delta of a call carries index, id, type and name; the later ones argument fragments.
    expect(deltas[0]).toMatchObject({ index: 0, type: "function", function: { arguments: "" } });
    expect(deltas[0]?.id).toMatch(/^call_/);
    expect(deltas.slice(1).every((d) => d.index === 0 && d.id === undefined && d.function?.name === undefined)).toBe(
      true,
    );
    expect(message.tool_calls).toHaveLength(1);
    const call = message.tool_calls![0]!;
    checkCall(call, call.type === "function" ? call.function.name : "");

    const final = stack.client.chat.completions.stream({
      model: "stories",
      messages: [...question, message, { role: "tool", tool_call_id: call.id, content: "21 degrees and clear" }],
      // Not strict: the SDK refuses to parse an answer cut at max tokens when its tools are strict, and
      // the fixture's nonsense text is cut there.
      tools: tools.map((t) => (t.type === "function" ? { ...t, function: { ...t.function, strict: false } } : t)),
      max_completion_tokens: 16,
    });
    const answer = await final.finalChatCompletion();
    expect(answer.choices[0]?.message.content?.length).toBeGreaterThan(0);
    expect(answer.choices[0]?.finish_reason).toMatch(/^(stop|length)$/);
  });

  it("makes several valid calls when parallel calls are allowed, each a declared function", async () => {
    for (let i = 0; i < 5; i++) {
      const res = await stack.client.chat.completions.create({
        model: "stories",
        messages: question,
        tools,
        tool_choice: "required",
        temperature: 1,
        max_completion_tokens: 400,
      });
      const calls = res.choices[0]!.message.tool_calls ?? [];
      expect(calls.length).toBeGreaterThanOrEqual(1);
      for (const c of calls) checkCall(c, c.type === "function" ? c.function.name : "");
      expect(new Set(calls.map((c) => c.id)).size).toBe(calls.length);
    }
  });

  it("refuses parameters the grammar cannot enforce, and calls that cannot fit, naming the param", async () => {
    const rejectedBefore = await rejectedChats();
    const refused = async (parameters: Record<string, unknown>, max = 200) => {
      const err = await stack.client.chat.completions
        .create({
          model: "stories",
          messages: question,
          tools: [{ type: "function", function: { name: "f", parameters } }],
          tool_choice: "required",
          max_completion_tokens: max,
        })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.BadRequestError);
      return err as InstanceType<typeof OpenAI.BadRequestError>;
    };
    const pattern = await refused({ type: "object", properties: { a: { type: "string", pattern: "^x" } } });
    expect(pattern.param).toBe("tools[0].function.parameters");
    expect(pattern.message).toContain("pattern");
    const big = await refused({ type: "object", properties: { a: { type: "string", maxLength: 500 } } });
    expect(big.param).toBe("tools[0].function.parameters");
    expect(big.message).toContain("cannot fit");
    const named = await stack.client.chat.completions
      .create({
        model: "stories",
        messages: question,
        tools,
        tool_choice: { type: "function", function: { name: "nope" } },
      })
      .catch((e: unknown) => e);
    expect((named as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("tool_choice.function.name");
    const notObject = await refused({ type: "string" });
    expect(notObject.param).toBe("tools[0].function.parameters");
    expect(notObject.message).toContain("function parameters must be an object schema");
    // The node refused these four itself, before admission: each counted as rejected in its metrics.
    expect(await rejectedChats()).toBe(rejectedBefore + 4);
  });
});
