// Structured output on /v1/chat/completions through the real gateway and node-agent with llama.cpp on the
// fixture model, with the official openai client: a zod schema through client.chat.completions.parse and
// zodResponseFormat, 50 runs all valid; json_object always parseable; schema features the grammar cannot
// enforce and schemas whose answers cannot fit the request refused with a 400 naming the param. The
// fixture writes nonsense text, but the grammar holds every answer to the format.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
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

// Bounded strings and arrays: every valid answer fits the fixture's 512-token sequences.
const Story = z.object({
  title: z.string().max(8),
  mood: z.enum(["happy", "sad"]),
  names: z.array(z.string().max(4)).max(2),
  stars: z.int(),
  end: z.boolean().nullable(),
});
const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "A short story" }];

async function badRequest(body: Partial<OpenAI.ChatCompletionCreateParamsNonStreaming>) {
  const err = await stack.client.chat.completions
    .create({ model: "stories", messages, max_completion_tokens: 300, ...body })
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(OpenAI.BadRequestError);
  return err as InstanceType<typeof OpenAI.BadRequestError>;
}

describe("structured output through the stack", () => {
  it("parses 50 answers to a zod schema, all valid", async () => {
    let parsed = 0;
    for (let i = 0; i < 50; i++) {
      const completion = await stack.client.chat.completions.parse({
        model: "stories",
        messages,
        response_format: zodResponseFormat(Story, "story"),
        temperature: 1,
        seed: i,
        max_completion_tokens: 300,
      });
      const message = completion.choices[0]!.message;
      expect(completion.choices[0]?.finish_reason).toBe("stop");
      // parse() already validated it; the check here does not depend on the SDK.
      Story.parse(JSON.parse(message.content!));
      if (message.parsed) parsed++;
    }
    expect(parsed).toBe(50);
  });

  it("streams a schema-bound answer whose text parses", async () => {
    const stream = stack.client.chat.completions.stream({
      model: "stories",
      messages,
      response_format: zodResponseFormat(Story, "story"),
      max_completion_tokens: 300,
    });
    const completion = await stream.finalChatCompletion();
    expect(Story.parse(completion.choices[0]?.message.parsed)).toBeTruthy();
  });

  it("gives parseable JSON objects for json_object", async () => {
    for (let i = 0; i < 10; i++) {
      const completion = await stack.client.chat.completions.create({
        model: "stories",
        messages: [{ role: "user", content: "Answer in JSON" }],
        response_format: { type: "json_object" },
        temperature: 1,
        seed: i,
        max_completion_tokens: 300,
      });
      expect(completion.choices[0]?.finish_reason).toBe("stop");
      const value = JSON.parse(completion.choices[0]!.message.content!);
      expect(typeof value === "object" && value !== null && !Array.isArray(value)).toBe(true);
    }
  });

  it("refuses schema features the grammar cannot enforce, naming the param", async () => {
    const schemas: [Record<string, unknown>, string][] = [
      [{ type: "object", properties: { a: { type: "string", pattern: "^a", maxLength: 4 } } }, "pattern"],
      [{ type: "object", properties: { a: { type: "integer", minimum: 3 } } }, "minimum"],
      [{ oneOf: [{ type: "string", maxLength: 3 }, { type: "integer" }] }, "type"],
      [{ type: "object", properties: {}, additionalProperties: true }, "additionalProperties"],
      [{ $ref: "#/$defs/node", $defs: { node: { type: "array", items: { $ref: "#/$defs/node" } } } }, "recursive"],
    ];
    for (const [schema, word] of schemas) {
      const err = await badRequest({
        response_format: { type: "json_schema", json_schema: { name: "x", schema, strict: true } },
      });
      expect(err.param).toBe("response_format.json_schema.schema");
      expect(err.message).toContain(word);
    }
  });

  it("refuses a schema whose longest answer cannot fit the request's room, rather than cut the answer", async () => {
    const schema = { type: "object", properties: { essay: { type: "string", maxLength: 2000 } }, required: ["essay"] };
    const err = await badRequest({ response_format: { type: "json_schema", json_schema: { name: "x", schema } } });
    expect(err.param).toBe("response_format.json_schema.schema");
    expect(err.message).toContain("cannot fit");
    // A bound the schema leaves open is closed to fit instead: an unbounded string still gets an answer.
    const open = await stack.client.chat.completions.create({
      model: "stories",
      messages,
      response_format: {
        type: "json_schema",
        json_schema: { name: "x", schema: { type: "object", properties: { essay: { type: "string" } } } },
      },
      max_completion_tokens: 60,
    });
    expect(open.choices[0]?.finish_reason).toBe("stop");
    expect(typeof JSON.parse(open.choices[0]!.message.content!).essay).toBe("string");
    expect(open.usage?.completion_tokens).toBeLessThanOrEqual(60);
  });

  it("refuses stop with a JSON format, and unknown response_format types, naming the param", async () => {
    expect((await badRequest({ response_format: { type: "json_object" }, stop: "}" })).param).toBe("stop");
    const unknown = await badRequest({ response_format: { type: "yaml" } as never });
    expect(unknown.param).toBe("response_format.type");
  });
});
