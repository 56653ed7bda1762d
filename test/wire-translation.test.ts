// The Responses and Messages translations as pure functions: request → chat request, chat answer → the
// route's answer, chat chunks → the route's events. Streams are read back by the official SDKs' own stream
// readers (openai's ResponseStream, @anthropic-ai/sdk's MessageStream), so the event sequences are
// checked by the code that clients run. The chat chunks are written here in OpenAI's chunk format, tool
// calls included, as the node will send them (the node-agent does not do tools yet; see
// test/openai-responses.test.ts and test/anthropic-messages.test.ts for real inference).
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionCreateParamsBase,
} from "openai/resources/chat/completions";
import { describe, expect, it } from "vitest";
import { type AnthropicMessagesRequest, anthropicMessagesRequest } from "../crds/api/anthropic-requests.ts";
import { type ResponsesRequest, responsesRequest } from "../crds/api/responses-requests.ts";
import { InvalidRequestError, NoReplicaError, RateLimitedError, UpstreamError } from "../gateway/errors.ts";
import { SseRelay } from "../gateway/sse-relay.ts";
import { anthropicEnvelope, chatToMessage, messagesToChat, messagesWire } from "../gateway/wire/anthropic-messages.ts";
import { chatToResponse, responsesParam, responsesToChat, responsesWire } from "../gateway/wire/responses.ts";
import { checkedChat, type StreamTranslator } from "../gateway/wire/wire-format.ts";

const usage = { prompt_tokens: 11, completion_tokens: 5, total_tokens: 16 };

function chunk(delta: ChatCompletionChunk.Choice.Delta, finish: ChatCompletionChunk.Choice["finish_reason"] = null) {
  return {
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    created: 1,
    model: "stories",
    choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
  } as ChatCompletionChunk;
}
const usageChunk: ChatCompletionChunk = {
  id: "chatcmpl-1",
  object: "chat.completion.chunk",
  created: 1,
  model: "stories",
  choices: [],
  usage,
};

const textChunks = [
  chunk({ role: "assistant", content: "" }),
  chunk({ content: "Once" }),
  chunk({ content: " upon" }),
  chunk({}, "stop"),
  usageChunk,
];
const toolChunks = [
  chunk({ role: "assistant", content: "" }),
  chunk({ content: "Let me look." }),
  chunk({ tool_calls: [{ index: 0, id: "call_a", type: "function", function: { name: "weather", arguments: "" } }] }),
  chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
  chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }),
  chunk({ tool_calls: [{ index: 1, id: "call_b", type: "function", function: { name: "time", arguments: "{}" } }] }),
  chunk({}, "tool_calls"),
  usageChunk,
];

/** The SSE a translator writes for a node stream, fed through the gateway's relay as the node sends it. */
function relayed(translator: StreamTranslator, chunks: object[]): string {
  const relay = new SseRelay("stories", false, undefined, translator);
  let out = "";
  for (const c of chunks) out += relay.push(`data: ${JSON.stringify(c)}\n\n`);
  out += relay.push("data: [DONE]\n\n");
  expect(relay.usage).toEqual(usage);
  expect(relay.done).toBe(true);
  return out;
}
/** The official clients, reading a stream as they would from the gateway. */
const sseFetch = (sse: string) => async () =>
  new Response(sse, { status: 200, headers: { "content-type": "text/event-stream" } });
const responsesStream = (sse: string) =>
  new OpenAI({
    apiKey: "k",
    baseURL: "http://translation.test/v1",
    fetch: sseFetch(sse),
    maxRetries: 0,
  }).responses.stream({
    model: "m",
    input: "x",
  });
const messagesStream = (sse: string) =>
  new Anthropic({
    apiKey: "k",
    baseURL: "http://translation.test",
    fetch: sseFetch(sse),
    maxRetries: 0,
  }).messages.stream({
    model: "m",
    max_tokens: 16,
    messages: [{ role: "user", content: "x" }],
  });

const completion = (message: ChatCompletion.Choice["message"], finish: ChatCompletion.Choice["finish_reason"]) =>
  ({
    id: "chatcmpl-1",
    object: "chat.completion",
    created: 1,
    model: "stories",
    choices: [{ index: 0, message, finish_reason: finish, logprobs: null }],
    usage,
  }) as ChatCompletion;

describe("Responses → chat completions", () => {
  const parse = (body: unknown) => responsesRequest.parse(body) as ResponsesRequest;

  it("turns instructions and a string input into a system and a user message", () => {
    const chat = responsesToChat(
      parse({ model: "m", instructions: "Be brief.", input: "Hi", max_output_tokens: 9, temperature: 0.5 }),
    );
    expect(chat).toEqual({
      model: "m",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
      max_completion_tokens: 9,
      temperature: 0.5,
    });
  });

  it("turns input items, function calls and their outputs into a chat history", () => {
    const chat = responsesToChat(
      parse({
        model: "m",
        input: [
          { role: "developer", content: "Use tools." },
          { type: "message", role: "user", content: [{ type: "input_text", text: "Weather in Paris?" }] },
          {
            type: "message",
            id: "msg_1",
            status: "completed",
            role: "assistant",
            content: [{ type: "output_text", text: "Checking.", annotations: [] }],
          },
          { type: "function_call", id: "fc_1", call_id: "call_a", name: "weather", arguments: '{"city":"Paris"}' },
          { type: "function_call", call_id: "call_b", name: "time", arguments: "{}" },
          { type: "function_call_output", call_id: "call_a", output: "sunny" },
          { type: "function_call_output", call_id: "call_b", output: [{ type: "input_text", text: "noon" }] },
        ],
        tools: [{ type: "function", name: "weather", parameters: { type: "object" }, strict: true }],
        tool_choice: { type: "function", name: "weather" },
        parallel_tool_calls: false,
      }),
    );
    expect(chat.messages).toEqual([
      { role: "developer", content: "Use tools." },
      { role: "user", content: [{ type: "text", text: "Weather in Paris?" }] },
      {
        role: "assistant",
        content: [{ type: "text", text: "Checking." }],
        tool_calls: [
          { id: "call_a", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } },
          { id: "call_b", type: "function", function: { name: "time", arguments: "{}" } },
        ],
      },
      { role: "tool", tool_call_id: "call_a", content: "sunny" },
      { role: "tool", tool_call_id: "call_b", content: "noon" },
    ]);
    expect(chat.tools).toEqual([
      { type: "function", function: { name: "weather", parameters: { type: "object" }, strict: true } },
    ]);
    expect(chat.tool_choice).toEqual({ type: "function", function: { name: "weather" } });
    expect(chat.parallel_tool_calls).toBe(false);
  });

  it("turns text.format into response_format", () => {
    const schema = { type: "object", properties: { a: { type: "string" } }, required: ["a"] };
    const chat = responsesToChat(
      parse({ model: "m", input: "x", text: { format: { type: "json_schema", name: "A", schema, strict: true } } }),
    );
    expect(chat.response_format).toEqual({ type: "json_schema", json_schema: { name: "A", schema, strict: true } });
    expect(
      responsesToChat(parse({ model: "m", input: "x", text: { format: { type: "json_object" } } })).response_format,
    ).toEqual({ type: "json_object" });
    expect(
      responsesToChat(parse({ model: "m", input: "x", text: { format: { type: "text" } } })).response_format,
    ).toBeUndefined();
  });

  it("refuses storage, previous responses and what it cannot honour, naming the parameter", () => {
    const issue = (body: unknown) => {
      const r = responsesRequest.safeParse(body);
      expect(r.success).toBe(false);
      return r.error!.issues[0]!;
    };
    expect(issue({ model: "m", input: "x", store: true })).toMatchObject({ path: ["store"] });
    expect(issue({ model: "m", input: "x", store: true }).message).toMatch(/does not store/);
    expect(issue({ model: "m", input: "x", previous_response_id: "resp_1" })).toMatchObject({
      path: ["previous_response_id"],
    });
    expect(issue({ model: "m", input: "x", tools: [{ type: "web_search" }] })).toMatchObject({
      path: ["tools", 0, "type"],
    });
    expect(issue({ model: "m", input: "x", reasoning: { effort: "low" } })).toMatchObject({
      code: "unrecognized_keys",
    });
    expect(
      issue({ model: "m", input: [{ role: "user", content: [{ type: "input_image", image_url: "x" }] }] }),
    ).toMatchObject({ path: ["input", 0, "content"], message: expect.stringMatching(/images/) });
    expect(issue({ model: "m", input: "x", text: { verbosity: "low" } })).toMatchObject({ code: "unrecognized_keys" });
    expect(issue({ model: "m", input: "x", truncation: "auto" })).toMatchObject({ path: ["truncation"] });
    expect(issue({ model: "m", input: "x", tool_choice: { type: "web_search_preview" } })).toMatchObject({
      path: ["tool_choice"],
    });
    expect(responsesRequest.safeParse({ model: "m", input: "x", store: false }).success).toBe(true);
  });

  it("refuses, before admission, a chat request the model servers would refuse, in the route's own names", () => {
    const refused = (chat: object) => {
      try {
        checkedChat(chat as ChatCompletionCreateParamsBase, responsesParam);
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidRequestError);
        return err as InvalidRequestError;
      }
      throw new Error("accepted");
    };
    const messages = [{ role: "user", content: "x" }];
    expect(refused({ model: "m", messages, unknown_feature: 1 })).toMatchObject({ param: "unknown_feature" });
    expect(refused({ model: "m", messages: [{ role: "user", content: 5 }] })).toMatchObject({ param: "input" });
    expect(refused({ model: "m", messages, max_completion_tokens: 0 })).toMatchObject({ param: "max_output_tokens" });
    expect(checkedChat({ model: "m", messages } as ChatCompletionCreateParamsBase, responsesParam)).toEqual({
      model: "m",
      messages,
    });
  });
});

describe("chat completions → Responses", () => {
  const body = responsesRequest.parse({ model: "m", input: "x", metadata: { a: "b" } }) as ResponsesRequest;

  it("answers a response object with an output_text message and usage", () => {
    const r = chatToResponse(
      completion({ role: "assistant", content: "Hello", refusal: null }, "stop"),
      body,
      "resp_1",
      5,
      "stories",
    );
    expect(r).toMatchObject({
      id: "resp_1",
      object: "response",
      created_at: 5,
      status: "completed",
      model: "stories",
      metadata: { a: "b" },
      store: false,
      usage: { input_tokens: 11, output_tokens: 5, total_tokens: 16 },
    });
    expect(r.output).toEqual([
      {
        id: expect.stringMatching(/^msg_/),
        type: "message",
        status: "completed",
        role: "assistant",
        content: [{ type: "output_text", text: "Hello", annotations: [], logprobs: [] }],
      },
    ]);
  });

  it("answers function_call items for tool calls and 'incomplete' for a cut-off answer", () => {
    const r = chatToResponse(
      completion(
        {
          role: "assistant",
          content: null,
          refusal: null,
          tool_calls: [
            { id: "call_a", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } },
          ],
        },
        "tool_calls",
      ),
      body,
      "resp_1",
      5,
      "stories",
    );
    expect(r.output).toEqual([
      {
        id: expect.stringMatching(/^fc_/),
        type: "function_call",
        status: "completed",
        call_id: "call_a",
        name: "weather",
        arguments: '{"city":"Paris"}',
      },
    ]);
    const cut = chatToResponse(
      completion({ role: "assistant", content: "Once", refusal: null }, "length"),
      body,
      "r",
      5,
      "s",
    );
    expect(cut.status).toBe("incomplete");
    expect(cut.incomplete_details).toEqual({ reason: "max_output_tokens" });
  });

  it("streams text as the typed events the openai SDK's ResponseStream reads", async () => {
    const sse = relayed(responsesWire.begin(body).stream("stories"), textChunks);
    const types = [...sse.matchAll(/^event: (\S+)$/gm)].map((m) => m[1]);
    expect(types).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      "response.output_text.delta",
      "response.output_text.delta",
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    const sequence = [...sse.matchAll(/"sequence_number":(\d+)/g)].map((m) => Number(m[1]));
    expect(sequence).toEqual(types.map((_, i) => i));
    const stream = responsesStream(sse);
    const deltas: string[] = [];
    stream.on("response.output_text.delta", (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    expect(deltas).toEqual(["Once", " upon"]);
    expect(final.output_text).toBe("Once upon");
    expect(final.status).toBe("completed");
    expect(final.usage).toMatchObject({ input_tokens: 11, output_tokens: 5, total_tokens: 16 });
  });

  it("streams tool calls as function_call items with argument deltas", async () => {
    const sse = relayed(responsesWire.begin(body).stream("stories"), toolChunks);
    const stream = responsesStream(sse);
    const argumentDeltas: string[] = [];
    stream.on("response.function_call_arguments.delta", (e) => argumentDeltas.push(e.delta));
    const final = await stream.finalResponse();
    expect(argumentDeltas).toEqual(['{"city":', '"Paris"}', "{}"]);
    expect(final.output.map((o) => o.type)).toEqual(["message", "function_call", "function_call"]);
    expect(final.output_text).toBe("Let me look.");
    expect(final.output[1]).toMatchObject({ call_id: "call_a", name: "weather", arguments: '{"city":"Paris"}' });
    expect(final.output[2]).toMatchObject({ call_id: "call_b", name: "time", arguments: "{}", status: "completed" });
  });

  it("ends a cut-off stream with response.incomplete and a failed one with error and response.failed", async () => {
    const cut = relayed(responsesWire.begin(body).stream("stories"), [
      ...textChunks.slice(0, 3),
      chunk({}, "length"),
      usageChunk,
    ]);
    expect(cut).toContain("event: response.incomplete");
    const final = await responsesStream(cut).finalResponse();
    expect(final.status).toBe("incomplete");
    expect(final.incomplete_details).toEqual({ reason: "max_output_tokens" });

    const translator = responsesWire.begin(body).stream("stories");
    const failed =
      translator.chunk(textChunks[1]!) + translator.fail(new UpstreamError("The model server's stream broke off."));
    expect(failed).toContain("event: error");
    expect(failed).toContain('"status":"failed"');
    // The SDK rejects on the error event; response.failed is there for clients that read events themselves.
    await expect(responsesStream(failed).finalResponse()).rejects.toThrow(/broke off/);
  });

  it("names the Responses parameter in errors from the chat pipeline", () => {
    const e = responsesWire.envelope(
      new InvalidRequestError("max_completion_tokens is 9000, more than …", "max_completion_tokens"),
    ) as {
      error: { param: string };
    };
    expect(e.error).toMatchObject({ param: "max_output_tokens", message: "max_output_tokens is 9000, more than …" });
    expect(
      (responsesWire.envelope(new InvalidRequestError("x", "messages[3].content")) as { error: { param: string } })
        .error.param,
    ).toBe("input");
  });

  it("names the Responses parameter of a node's schema refusal, past the first segment", () => {
    const refusal = (param: string) =>
      (
        responsesWire.envelope(new InvalidRequestError(`${param}: not enforceable`, param)) as {
          error: { param: string; message: string };
        }
      ).error;
    expect(refusal("tools[2].function.parameters")).toEqual(
      expect.objectContaining({ param: "tools[2].parameters", message: "tools[2].parameters: not enforceable" }),
    );
    expect(refusal("tool_choice.function.name").param).toBe("tool_choice.name");
    expect(refusal("response_format.json_schema.schema").param).toBe("text.format.schema");
  });
});

describe("Anthropic Messages → chat completions", () => {
  const parse = (body: unknown) => anthropicMessagesRequest.parse(body) as AnthropicMessagesRequest;

  it("turns system, text, tool_use and tool_result blocks into a chat history", () => {
    const chat = messagesToChat(
      parse({
        model: "m",
        max_tokens: 64,
        system: [{ type: "text", text: "You help.", cache_control: { type: "ephemeral" } }],
        messages: [
          { role: "user", content: "Weather in Paris?" },
          {
            role: "assistant",
            content: [
              { type: "text", text: "Checking." },
              { type: "tool_use", id: "toolu_1", name: "weather", input: { city: "Paris" } },
            ],
          },
          {
            role: "user",
            content: [
              { type: "tool_result", tool_use_id: "toolu_1", content: [{ type: "text", text: "sunny" }] },
              { type: "text", text: "And tomorrow?" },
            ],
          },
        ],
        tools: [{ name: "weather", description: "Weather now", input_schema: { type: "object" } }],
        tool_choice: { type: "any", disable_parallel_tool_use: true },
        stop_sequences: ["\n\n"],
        temperature: 0.2,
        metadata: { user_id: "u1" },
      }),
    );
    expect(chat).toEqual({
      model: "m",
      max_tokens: 64,
      messages: [
        { role: "system", content: "You help." },
        { role: "user", content: "Weather in Paris?" },
        {
          role: "assistant",
          content: "Checking.",
          tool_calls: [
            { id: "toolu_1", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } },
          ],
        },
        { role: "tool", tool_call_id: "toolu_1", content: "sunny" },
        { role: "user", content: "And tomorrow?" },
      ],
      tools: [
        { type: "function", function: { name: "weather", description: "Weather now", parameters: { type: "object" } } },
      ],
      tool_choice: "required",
      parallel_tool_calls: false,
      stop: ["\n\n"],
      temperature: 0.2,
    });
    expect(
      messagesToChat(
        parse({
          model: "m",
          max_tokens: 1,
          messages: [{ role: "user", content: "x" }],
          tool_choice: { type: "tool", name: "f" },
        }),
      ).tool_choice,
    ).toEqual({
      type: "function",
      function: { name: "f" },
    });
  });

  it("turns output_config.format into a json_schema response_format", () => {
    const schema = { type: "object", properties: { a: { type: "integer" } }, required: ["a"] };
    const chat = messagesToChat(
      parse({
        model: "m",
        max_tokens: 8,
        messages: [{ role: "user", content: "x" }],
        output_config: { format: { type: "json_schema", schema } },
      }),
    );
    expect(chat.response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "output", schema, strict: true },
    });
  });

  it("refuses what it cannot honour and requires max_tokens", () => {
    const issue = (body: unknown) => anthropicMessagesRequest.safeParse(body).error?.issues[0];
    expect(issue({ model: "m", messages: [{ role: "user", content: "x" }] })).toMatchObject({ path: ["max_tokens"] });
    expect(
      issue({ model: "m", max_tokens: 1, messages: [{ role: "user", content: [{ type: "image", source: {} }] }] }),
    ).toMatchObject({ path: ["messages", 0, "content"], message: expect.stringMatching(/images/) });
    expect(
      issue({ model: "m", max_tokens: 1, messages: [{ role: "user", content: "x" }], thinking: { type: "enabled" } }),
    ).toMatchObject({
      code: "unrecognized_keys",
    });
    const base = { model: "m", max_tokens: 1, messages: [{ role: "user", content: "x" }] };
    expect(issue({ ...base, tools: [{ type: "web_search_20250305", name: "web_search" }] })).toMatchObject({
      path: ["tools", 0, "type"],
    });
    expect(issue({ ...base, output_config: { effort: "low" } })).toMatchObject({ code: "unrecognized_keys" });
    expect(issue({ ...base, stop_sequences: ["a", "b", "c", "d", "e"] })).toMatchObject({ path: ["stop_sequences"] });
  });
});

describe("chat completions → Anthropic Messages", () => {
  const body = anthropicMessagesRequest.parse({
    model: "m",
    max_tokens: 16,
    messages: [{ role: "user", content: "x" }],
  });

  it("answers a message with text and tool_use blocks and Anthropic's stop reasons", () => {
    expect(
      chatToMessage(completion({ role: "assistant", content: "Hi", refusal: null }, "stop"), "msg_1", "stories"),
    ).toEqual({
      id: "msg_1",
      type: "message",
      role: "assistant",
      content: [{ type: "text", text: "Hi" }],
      model: "stories",
      stop_reason: "end_turn",
      stop_sequence: null,
      usage: { input_tokens: 11, output_tokens: 5, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    });
    const tools = chatToMessage(
      completion(
        {
          role: "assistant",
          content: null,
          refusal: null,
          tool_calls: [
            { id: "call_a", type: "function", function: { name: "weather", arguments: '{"city":"Paris"}' } },
          ],
        },
        "tool_calls",
      ),
      "msg_1",
      "stories",
    );
    expect(tools.content).toEqual([{ type: "tool_use", id: "call_a", name: "weather", input: { city: "Paris" } }]);
    expect(tools.stop_reason).toBe("tool_use");
    expect(
      chatToMessage(completion({ role: "assistant", content: "a", refusal: null }, "length"), "m", "s").stop_reason,
    ).toBe("max_tokens");
  });

  it("streams text as the events the Anthropic SDK's MessageStream reads", async () => {
    const sse = relayed(messagesWire.begin(body).stream("stories"), textChunks);
    expect([...sse.matchAll(/^event: (\S+)$/gm)].map((m) => m[1])).toEqual([
      "message_start",
      "content_block_start",
      "ping",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    const stream = messagesStream(sse);
    const texts: string[] = [];
    stream.on("text", (t) => texts.push(t));
    const final = await stream.finalMessage();
    expect(texts).toEqual(["Once", " upon"]);
    expect(final.content).toEqual([{ type: "text", text: "Once upon" }]);
    expect(final.stop_reason).toBe("end_turn");
    expect(final.usage).toMatchObject({ input_tokens: 11, output_tokens: 5 });
  });

  it("streams tool calls as tool_use blocks with input_json_delta", async () => {
    const sse = relayed(messagesWire.begin(body).stream("stories"), toolChunks);
    const final = await messagesStream(sse).finalMessage();
    expect(final.content).toEqual([
      { type: "text", text: "Let me look." },
      { type: "tool_use", id: "call_a", name: "weather", input: { city: "Paris" } },
      { type: "tool_use", id: "call_b", name: "time", input: {} },
    ]);
    expect(final.stop_reason).toBe("tool_use");
  });

  it("refuses a stream whose tool calls interleave, and writes errors in Anthropic's shape", async () => {
    const translator = messagesWire.begin(body).stream("stories");
    translator.chunk(toolChunks[2]!);
    translator.chunk(toolChunks[5]!);
    expect(() => translator.chunk(toolChunks[3]!)).toThrow(UpstreamError);
    const broken = messagesWire.begin(body).stream("stories");
    const sse =
      broken.chunk(textChunks[0]!) +
      broken.chunk(textChunks[1]!) +
      broken.fail(new UpstreamError("The model server's stream broke off."));
    expect(sse).toContain('event: error\ndata: {"type":"error","error":{"type":"api_error"');
    const stream = messagesStream(sse);
    await expect(stream.finalMessage()).rejects.toBeInstanceOf(Anthropic.APIError);
  });

  it("holds tool names to the chat rule, so a bad one is refused naming the Anthropic parameter", () => {
    const tool = (name: string) => ({
      model: "m",
      max_tokens: 10,
      messages: [{ role: "user", content: "hi" }],
      tools: [{ name, input_schema: { type: "object" } }],
    });
    expect(anthropicMessagesRequest.safeParse(tool("get_weather")).success).toBe(true);
    for (const name of ["get weather", "x".repeat(65), "wetter.heute"]) {
      const parsed = anthropicMessagesRequest.safeParse(tool(name));
      expect(parsed.success).toBe(false);
      expect(parsed.error?.issues[0]?.path).toEqual(["tools", 0, "name"]);
    }
  });

  it("maps statuses to Anthropic's error types, naming the parameter", () => {
    expect(anthropicEnvelope(new InvalidRequestError("Invalid value", "max_completion_tokens"))).toEqual({
      type: "error",
      error: { type: "invalid_request_error", message: "Invalid value (max_tokens)" },
    });
    const schema = anthropicEnvelope(
      new InvalidRequestError("tools[1].function.parameters: not enforceable", "tools[1].function.parameters"),
    );
    expect(schema.error.message).toBe("tools[1].input_schema: not enforceable");
    expect(
      anthropicEnvelope(new InvalidRequestError("schema: x", "response_format.json_schema.schema")).error.message,
    ).toContain("(output_config.format.schema)");
    expect(anthropicEnvelope(new RateLimitedError("requests", 1, 1000, "p")).error.type).toBe("rate_limit_error");
    expect(anthropicEnvelope(new NoReplicaError("m")).error.type).toBe("overloaded_error");
  });
});
