import { z } from "zod";
import { conditions, modelName, objectName, setOf, withRules } from "./schema-kit.ts";

export const apiKeySpec = withRules(
  z.strictObject({
    owner: z
      .string()
      .min(1)
      .max(253)
      .describe("Who the key belongs to, e.g. a team or a service; shown in metrics and logs."),
    models: setOf(
      modelName("A model name or alias this key may call."),
      256,
      "Models this key may call, by name or alias; unset allows every model in the namespace.",
    ).optional(),
    rateLimitPolicy: objectName(
      "A RateLimitPolicy in this namespace applied to every request with this key.",
    ).optional(),
    expiresAt: z.iso
      .datetime({ offset: true })
      .optional()
      .describe("RFC 3339 time after which the key is refused; unset never expires."),
    disabled: z.boolean().default(false).describe("Refuse the key without deleting it."),
    secretRef: z
      .strictObject({
        name: objectName("Name of a Secret in this namespace that holds the key."),
        key: z.string().min(1).max(253).default("key").describe("Data key in the Secret that holds the API key."),
      })
      .optional()
      .describe(
        "Use a key from your own Secret instead of one the operator mints. The Secret must opt in with the annotation pomona.dev/api-key set to this ApiKey's name; any other Secret is refused (Ready=False, SecretNotOptedIn).",
      ),
  }),
  "The desired state of an ApiKey.",
  [
    {
      rule: "!has(self.models) || self.models.size() > 0",
      message: "models must list at least one model, or be left out to allow all",
      check: (s) => s.models === undefined || s.models.length > 0,
    },
  ],
);

export const apiKeyStatus = z
  .object({
    observedGeneration: z.int().min(0).optional().describe("The .metadata.generation this status describes."),
    secretName: z.string().optional().describe("The Secret that holds the key."),
    prefix: z.string().max(32).optional().describe("The first characters of the key, to recognise it; never the key."),
    hash: z
      .string()
      .regex(/^[a-f0-9]{64}$/)
      .optional()
      .describe(
        "HMAC-SHA256 of the key under the operator's hashing key (Secret pomona-key-hashing), in hex, which the gateway matches; never the key.",
      ),
    hashKeyId: z
      .string()
      .max(32)
      .optional()
      .describe("Which hashing key the hash was made under (a public fingerprint of it), to follow a rotation."),
    conditions,
  })
  .describe("The observed state of an ApiKey, written by the operator.");

export type ApiKeySpec = z.infer<typeof apiKeySpec>;
export type ApiKeyStatus = z.infer<typeof apiKeyStatus>;
