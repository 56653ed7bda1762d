import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  ConfigNotReadyError,
  decodeCorePart,
  decodeGatewayConfig,
  encodeGatewayConfig,
  type GatewayConfig,
} from "../crds/api/index.ts";

const hashOf = (i: number) => createHash("sha256").update(`sk-pomona-${i}`).digest("hex");

function configWithKeys(count: number): GatewayConfig {
  return {
    version: 7,
    generatedAt: new Date().toISOString(),
    models: [
      {
        namespace: "default",
        name: "tiny",
        aliases: ["small"],
        endpoints: [
          {
            url: "http://127.0.0.1:9000/replicas/default/tiny-abc",
            replica: "tiny-abc",
            node: "mac-1",
            weight: 1,
            slots: 4,
          },
        ],
        fallbacks: [],
        embeddings: true,
        contextSize: 512,
        sequenceContextSize: 128,
      },
    ],
    policies: [{ namespace: "default", name: "standard", requestsPerMinute: 60, scope: "PerKey" }],
    keys: Array.from({ length: count }, (_, i) => ({
      hash: hashOf(i),
      namespace: "default",
      name: `key-${i}`,
      owner: `team-${i % 100}`,
      models: ["tiny"],
      rateLimitPolicy: "standard",
    })),
  };
}

describe("gateway config storage", () => {
  it("round-trips a config through its stored parts", () => {
    const config = configWithKeys(500);
    const encoded = encodeGatewayConfig(config);
    const decoded = decodeGatewayConfig(
      decodeCorePart(encoded.core),
      encoded.buckets.map((b) => b.bytes),
    );
    expect(decoded.models).toEqual(config.models);
    expect(decoded.policies).toEqual(config.policies);
    expect(new Set(decoded.keys.map((k) => k.hash))).toEqual(new Set(config.keys.map((k) => k.hash)));
  });

  it("keeps every part of 100,000 keys well under the 1 MiB object limit", () => {
    const encoded = encodeGatewayConfig(configWithKeys(100_000));
    const largest = Math.max(encoded.core.length, ...encoded.buckets.map((b) => b.bytes.length));
    // Secrets store base64: 4/3 of the bytes.
    expect((largest * 4) / 3).toBeLessThan(512 * 1024);
  });

  it("refuses a bucket written for another version", () => {
    const before = encodeGatewayConfig(configWithKeys(100));
    const after = encodeGatewayConfig({ ...configWithKeys(101), version: 8 });
    const stale = after.buckets.findIndex((b, i) => b.sha256 !== before.buckets[i]?.sha256);
    expect(stale).toBeGreaterThanOrEqual(0);
    const mixed = after.buckets.map((b, i) => (i === stale ? before.buckets[i]?.bytes : b.bytes));
    const core = decodeCorePart(after.core);
    expect(() => decodeGatewayConfig(core, mixed)).toThrow(ConfigNotReadyError);
    expect(() => decodeGatewayConfig(core, [])).toThrow(ConfigNotReadyError);
  });
});
