// Chat messages to a prompt (node-agent/chat-prompt.ts) with tools: one tool format whichever the path,
// Pomona's `Functions:` note, `<tool_call>[…]` calls and text results. The fixture model has no chat
// template, so the template path runs on a stand-in model object carrying only a GGUF's chat template
// (a ChatML template that renders `tools` its own way when given them, as Qwen's and Hermes' do).
import type { LlamaModel } from "node-llama-cpp";
import { describe, expect, it } from "vitest";
import type { ChatMessage } from "../crds/api/openai-requests.ts";
import { chatPrompt } from "../node-agent/chat-prompt.ts";
import { toolInstructions } from "../node-agent/tool-calls.ts";

const TEMPLATE = [
  "{%- if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools><|im_end|>\n{%- endif %}",
  "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}",
  "{%- if m.tool_calls %}<native_call>{% for c in m.tool_calls %}{{ c | tojson }}{% endfor %}{%- endif %}",
  "<|im_end|>\n{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}",
].join("");
const templated = { fileInfo: { metadata: { tokenizer: { chat_template: TEMPLATE } } } } as unknown as LlamaModel;
const plain = { fileInfo: { metadata: { tokenizer: {} } } } as unknown as LlamaModel;

const tools = [
  {
    type: "function" as const,
    function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } },
  },
];
const messages: ChatMessage[] = [
  { role: "user", content: "Weather in Paris?" },
  {
    role: "assistant",
    content: null,
    tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }],
  },
  { role: "tool", tool_call_id: "call_1", content: "sunny, 21 C" },
];

describe("chatPrompt with tools", () => {
  it.each([
    ["a chat template", templated],
    ["the plain transcript", plain],
  ])("writes the tools, earlier calls and results in Pomona's one format with %s", (_, model) => {
    const { prompt } = chatPrompt(model, messages, { notes: [toolInstructions(tools)] });
    const text = prompt.toString();
    expect(text.match(/Functions:/g)).toHaveLength(1);
    expect(text).toContain('<tool_call>[{"name":"get_weather","arguments":{"city":"Paris"}}]');
    expect(text).toContain("sunny, 21 C");
    // Nothing in a template's own tool format.
    expect(text).not.toContain("<tools>");
    expect(text).not.toContain("<native_call>");
  });

  it("names the function a template-path tool result answers", () => {
    const text = chatPrompt(templated, messages, {}).prompt.toString();
    expect(text).toContain("Tool result (get_weather): sunny, 21 C");
    expect(text.endsWith("<|im_start|>assistant\n")).toBe(true);
  });
});
