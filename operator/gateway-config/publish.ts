/**
 * Publishes a compiled gateway config into the Secrets of its storage format
 * (crds/api/gateway-config-codec.ts): changed key buckets first, the core
 * last, so a gateway that sees the new core finds buckets that match it.
 * Unchanged buckets are not written again.
 */
import { createHash } from "node:crypto";
import type { V1Secret, V1SecretList } from "@kubernetes/client-node";
import {
  bucketSecretName,
  CONFIG_DATA_KEY,
  coreSecretName,
  type EncodedConfig,
  encodeGatewayConfig,
  fieldManagers,
  type GatewayConfig,
  labels,
} from "../../crds/api/index.ts";
import type { KubeRest } from "../../kube/rest.ts";

const hashAnnotation = "pomona.dev/sha256";
const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

export class GatewayConfigPublisher {
  /** sha256 of what each bucket Secret holds, as last written or read. */
  private readonly written = new Map<string, string>();
  private seeded = false;

  private readonly rest: KubeRest;
  private readonly namespace: string;

  constructor(rest: KubeRest, namespace: string) {
    this.rest = rest;
    this.namespace = namespace;
  }

  async publish(config: GatewayConfig): Promise<{ bucketsWritten: number; bytes: number }> {
    return this.publishEncoded(encodeGatewayConfig(config), config.version);
  }

  /** Publish parts already encoded (incremental.ts keeps the unchanged buckets' bytes from before). */
  async publishEncoded(encoded: EncodedConfig, version: number): Promise<{ bucketsWritten: number; bytes: number }> {
    if (!this.seeded) await this.seed();
    let bucketsWritten = 0;
    let bytes = encoded.core.length;
    await Promise.all(
      encoded.buckets.map(async ({ bytes: data, sha256 }, i) => {
        const name = bucketSecretName(i);
        if (this.written.get(name) === sha256) return;
        await this.apply(name, data, sha256);
        this.written.set(name, sha256);
        bucketsWritten++;
        bytes += data.length;
      }),
    );
    await this.apply(coreSecretName, encoded.core, String(version));
    return { bucketsWritten, bytes };
  }

  /** A restarted operator reads what is published (one list) rather than writing every bucket again. */
  private async seed(): Promise<void> {
    const list = await this.rest.get<V1SecretList>(`/api/v1/namespaces/${this.namespace}/secrets`, {
      labelSelector: `${labels.gatewayConfig}=true`,
    });
    for (const secret of list.items) {
      const data = secret.data?.[CONFIG_DATA_KEY];
      // The stored bytes are hashed, not the annotation trusted: a bucket edited by hand is written again.
      if (secret.metadata?.name && data) this.written.set(secret.metadata.name, sha256(Buffer.from(data, "base64")));
    }
    this.seeded = true;
  }

  private async apply(name: string, data: Buffer, hash: string): Promise<void> {
    const secret: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: {
        name,
        namespace: this.namespace,
        labels: { [labels.gatewayConfig]: "true" },
        annotations: { [hashAnnotation]: hash },
      },
      data: { [CONFIG_DATA_KEY]: data.toString("base64") },
    };
    await this.rest.patch(`/api/v1/namespaces/${this.namespace}/secrets/${name}`, secret, "apply", {
      fieldManager: fieldManagers.operator,
      force: true,
    });
  }
}
