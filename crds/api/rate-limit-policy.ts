import { z } from "zod";
import { conditions, withRules } from "./schema-kit.ts";

const limit = (description: string) => z.int().min(1).max(1_000_000_000).optional().describe(description);

export const rateLimitPolicySpec = withRules(
  z.strictObject({
    requestsPerMinute: limit("Requests admitted per minute."),
    tokensPerMinute: limit(
      "Prompt plus completion tokens per minute; a request reserves prompt + max_tokens up front.",
    ),
    tokensPerDay: limit("Prompt plus completion tokens per day."),
    concurrentRequests: limit("Requests in flight at once."),
    burst: limit("Requests allowed at once above the per-minute pace; unset means requestsPerMinute."),
    scope: z
      .enum(["PerKey", "PerModel", "PerKeyAndModel"])
      .default("PerKey")
      .describe(
        "What one budget is counted for: each key, each model, or each key and model pair. A policy named by a model counts per model unless PerKeyAndModel.",
      ),
    priorityClass: z
      .enum(["interactive", "batch"])
      .default("interactive")
      .describe(
        "How the requests of keys naming this policy are served when a model is busy and they wait in the gateway's line: interactive before batch (batch still gets one in every 8 places served, and never waits past the line's deadline). Has no effect on a policy named by a model.",
      ),
  }),
  "The limits of a RateLimitPolicy.",
  [
    {
      rule: "has(self.requestsPerMinute) || has(self.tokensPerMinute) || has(self.tokensPerDay) || has(self.concurrentRequests)",
      message: "set at least one of requestsPerMinute, tokensPerMinute, tokensPerDay or concurrentRequests",
      check: (s) =>
        [s.requestsPerMinute, s.tokensPerMinute, s.tokensPerDay, s.concurrentRequests].some((x) => x !== undefined),
    },
    {
      rule: "!has(self.burst) || has(self.requestsPerMinute)",
      message: "burst needs requestsPerMinute",
      check: (s) => s.burst === undefined || s.requestsPerMinute !== undefined,
    },
    {
      rule: "!has(self.tokensPerMinute) || !has(self.tokensPerDay) || self.tokensPerMinute <= self.tokensPerDay",
      message: "tokensPerMinute cannot exceed tokensPerDay",
      check: (s) =>
        s.tokensPerMinute === undefined || s.tokensPerDay === undefined || s.tokensPerMinute <= s.tokensPerDay,
    },
  ],
);

export const rateLimitPolicyStatus = z
  .object({
    observedGeneration: z.int().min(0).optional().describe("The .metadata.generation this status describes."),
    keys: z.int().min(0).optional().describe("ApiKeys that name this policy."),
    models: z.int().min(0).optional().describe("InferenceModels that name this policy."),
    conditions,
  })
  .describe("The observed state of a RateLimitPolicy, written by the operator.");

export type RateLimitPolicySpec = z.infer<typeof rateLimitPolicySpec>;
export type RateLimitPolicyStatus = z.infer<typeof rateLimitPolicyStatus>;
