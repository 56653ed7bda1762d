// A gateway for tests: the real app, fed by the real config watcher from configs published into a real API server.
import { randomBytes } from "node:crypto";
import type { AddressInfo } from "node:net";
import { CoreV1Api } from "@kubernetes/client-node";
import type { FastifyInstance } from "fastify";
import {
  type GatewayConfig,
  type GatewayKey,
  type GatewayModel,
  type GatewayPolicy,
  hashingKey,
  keyedHash,
  keyHashingDataKeys,
  keyHashingSecret,
} from "../../crds/api/index.ts";
import { buildAdminApp } from "../../gateway/admin-app.ts";
import { buildApp, type GatewayDeps } from "../../gateway/app.ts";
import { defaultClientLimits } from "../../gateway/client-connections.ts";
import { ConfigHolder } from "../../gateway/config-source/config-holder.ts";
import { GatewayConfigWatcher } from "../../gateway/config-source/secret-watcher.ts";
import { HashingKeysHolder, HashingKeysWatcher } from "../../gateway/key-hashing.ts";
import type { Limiter } from "../../gateway/limits/limiter.ts";
import { MemoryLimiter } from "../../gateway/limits/memory-limiter.ts";
import { createMetrics, type GatewayMetrics } from "../../gateway/metrics.ts";
import { closeGracefully } from "../../gateway/shutdown.ts";
import { KubeRest } from "../../kube/rest.ts";
import { GatewayConfigPublisher } from "../../operator/gateway-config/publish.ts";
import { kubeConfig } from "./kube.ts";
import { eventually } from "./processes.ts";

// Many suites take these from here with the rest of their gateway set-up.
export { createNamespace, kubeConfig } from "./kube.ts";

export const NODE_TOKEN = "node-token-for-tests";
/** The hashing key of configs published by ConfigFeed (the operator makes a random one). */
export const TEST_HASHING_KEY = hashingKey(Buffer.alloc(32, "hashing-key-for-tests"));
/**
 * Every test client comes from 127.0.0.1, so tests about other things would trip the invalid-key throttle;
 * test/keys-security.test.ts checks the throttle with small figures of its own.
 */
export const RELAXED_INVALID_KEYS = { burst: 1_000_000, refillPerMinute: 1_000_000, maxAddresses: 100 };

/** Write the hashing-key Secret the way the operator would: `replace` overwrites one already there. */
export async function writeHashingSecret(
  namespace: string,
  mode: "create-if-absent" | "replace",
  kubeconfig?: string,
): Promise<void> {
  const core = kubeConfig(kubeconfig).makeApiClient(CoreV1Api);
  const body = {
    metadata: { name: keyHashingSecret, namespace },
    data: { [keyHashingDataKeys.current]: TEST_HASHING_KEY.bytes.toString("base64") },
  };
  try {
    await core.createNamespacedSecret({ namespace, body });
  } catch (err) {
    if ((err as { code?: number }).code !== 409) throw err;
    if (mode === "replace") await core.replaceNamespacedSecret({ name: keyHashingSecret, namespace, body });
  }
}

export interface TestKey {
  /** The plaintext key, as a client holds it. */
  secret: string;
  key: GatewayKey;
}

export function makeKey(namespace: string, name: string, extra: Partial<GatewayKey> = {}): TestKey {
  const secret = `sk-pomona-${randomBytes(18).toString("base64url")}`;
  const hash = keyedHash(secret, TEST_HASHING_KEY);
  return { secret, key: { hash, namespace, name, owner: `team-${name}`, ...extra } };
}

export function model(namespace: string, name: string, extra: Partial<GatewayModel> = {}): GatewayModel {
  return {
    namespace,
    name,
    aliases: [],
    endpoints: [],
    fallbacks: [],
    embeddings: true,
    contextSize: 4096,
    sequenceContextSize: 1024,
    ...extra,
  };
}

export function policy(
  namespace: string,
  name: string,
  limits: Omit<GatewayPolicy, "namespace" | "name">,
): GatewayPolicy {
  return { namespace, name, ...limits };
}

/** Publishes configs the way the operator does, with increasing versions. */
export class ConfigFeed {
  publisher: GatewayConfigPublisher;
  version = 0;
  private readonly namespace: string;
  private hashingSecretWritten = false;
  constructor(namespace: string) {
    this.namespace = namespace;
    this.publisher = new GatewayConfigPublisher(new KubeRest(kubeConfig()), namespace);
  }
  /** After a test wrote config Secrets itself: the publisher must not trust what it wrote before. */
  forgetWritten(): void {
    this.publisher = new GatewayConfigPublisher(new KubeRest(kubeConfig()), this.namespace);
  }
  async publish(parts: {
    models: GatewayModel[];
    keys: TestKey[];
    policies?: GatewayPolicy[];
  }): Promise<GatewayConfig> {
    if (!this.hashingSecretWritten) {
      await writeHashingSecret(this.namespace, "replace");
      this.hashingSecretWritten = true;
    }
    this.version++;
    const config: GatewayConfig = {
      version: this.version,
      generatedAt: new Date().toISOString(),
      models: parts.models,
      keys: parts.keys.map((k) => k.key),
      policies: parts.policies ?? [],
    };
    await this.publisher.publish(config);
    return config;
  }
}

export interface TestGateway {
  app: FastifyInstance;
  /** The public port: the OpenAI API. */
  url: string;
  /** The internal port: /healthz, /readyz and /metrics. */
  adminUrl: string;
  holder: ConfigHolder;
  metrics: GatewayMetrics;
  watcher: GatewayConfigWatcher;
  /** Waits until the gateway serves at least this config version. */
  waitForVersion: (version: number) => Promise<void>;
  close: () => Promise<void>;
}

export async function startGateway(
  namespace: string,
  options: {
    nodeToken?: string;
    limiter?: Limiter;
    now?: () => number;
    upstream?: Partial<GatewayDeps["upstream"]>;
    queue?: Partial<GatewayDeps["queue"]>;
    bodyLimitBytes?: number;
    answerLimitBytes?: number;
    clients?: GatewayDeps["clients"];
    metrics?: GatewayMetrics;
    invalidKeys?: GatewayDeps["invalidKeys"];
    corsOrigins?: GatewayDeps["corsOrigins"];
  } = {},
): Promise<TestGateway> {
  const metrics = options.metrics ?? createMetrics();
  const holder = new ConfigHolder();
  const limiter = options.limiter ?? new MemoryLimiter();
  const hashingKeys = new HashingKeysHolder();
  await writeHashingSecret(namespace, "create-if-absent");
  const app = await buildApp({
    hashingKeys,
    invalidKeys: options.invalidKeys ?? RELAXED_INVALID_KEYS,
    holder,
    limiter,
    metrics,
    nodeToken: options.nodeToken ?? NODE_TOKEN,
    upstream: { firstByteTimeoutMs: 2_000, totalTimeoutMs: 30_000, breakerResetMs: 1_000, ...options.upstream },
    queue: { timeoutMs: 5_000, maxPerModel: 256, ...options.queue },
    bodyLimitBytes: options.bodyLimitBytes ?? 1024 * 1024,
    answerLimitBytes: options.answerLimitBytes,
    // The test process plays many clients from one address: the per-address cap would count them as one.
    clients: options.clients ?? { ...defaultClientLimits, maxConnectionsPerClient: 100_000 },
    now: options.now,
    corsOrigins: options.corsOrigins,
    logLevel: process.env.POMONA_TEST_LOG_LEVEL ?? "silent",
  });
  const watcher = new GatewayConfigWatcher({
    kubeConfig: kubeConfig(),
    namespace,
    holder,
    log: app.log,
    metrics,
    notReadyRetryMs: 100,
    resyncMs: 2_000,
  });
  watcher.start();
  const hashingWatcher = new HashingKeysWatcher({
    kubeConfig: kubeConfig(),
    namespace,
    holder: hashingKeys,
    log: app.log,
    resyncMs: 2_000,
  });
  hashingWatcher.start();
  await app.listen({ port: 0, host: "127.0.0.1" });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const admin = await buildAdminApp({ holder, hashingKeys, metrics, logLevel: "silent" });
  await admin.listen({ port: 0, host: "127.0.0.1" });
  const adminUrl = `http://127.0.0.1:${(admin.server.address() as AddressInfo).port}`;
  return {
    app,
    url,
    adminUrl,
    holder,
    metrics,
    watcher,
    waitForVersion: (version) =>
      eventually(
        `gateway config version ${version}`,
        async () => (holder.version >= version ? true : undefined),
        30_000,
      ).then(() => undefined),
    close: async () => {
      watcher.stop();
      hashingWatcher.stop();
      await closeGracefully(app, 500);
      await admin.close();
      await limiter.close();
    },
  };
}
