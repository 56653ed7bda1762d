// The cross-field rules of OpenAI requests (crds/api/openai-requests.ts samplingRefusal), which the
// gateway checks before admission and the node-agent again, as plain functions.
import { describe, expect, it } from "vitest";
import { type ChatCompletionRequest, samplingRefusal } from "../crds/api/openai-requests.ts";

const chat = (extra: Partial<ChatCompletionRequest>): ChatCompletionRequest => ({
  model: "m",
  messages: [{ role: "user", content: "hi" }],
  ...extra,
});
const tools: ChatCompletionRequest["tools"] = [{ type: "function", function: { name: "f" } }];

describe("samplingRefusal", () => {
  it("refuses top_logprobs without logprobs", () => {
    expect(samplingRefusal(chat({ top_logprobs: 2 }))?.param).toBe("top_logprobs");
    expect(samplingRefusal(chat({ top_logprobs: 2, logprobs: true }))).toBeUndefined();
  });

  it("refuses logprobs with tools, unless tool_choice is none", () => {
    expect(samplingRefusal(chat({ logprobs: true, tools }))).toMatchObject({ param: "logprobs" });
    expect(samplingRefusal(chat({ logprobs: true, tools, tool_choice: "required" }))?.param).toBe("logprobs");
    expect(samplingRefusal(chat({ logprobs: true, tools, tool_choice: "none" }))).toBeUndefined();
    expect(samplingRefusal(chat({ logprobs: false, tools }))).toBeUndefined();
    expect(samplingRefusal(chat({ logprobs: true }))).toBeUndefined();
  });
});
