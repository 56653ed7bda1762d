/**
 * The replicas bound to this node, from the API server's word to a loaded model and back: fetch the file,
 * check it fits the node's model memory, load, warm up, report Ready with the endpoint; unload on delete.
 * Each replica runs on its own; a failure becomes its Failed status and never touches the others.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import type { FastifyBaseLogger } from "fastify";
import type { Llama } from "node-llama-cpp";
import {
  API_VERSION,
  type ModelReplica,
  type ModelReplicaStatus,
  modelReplicaDefinition,
  modelReplicaSpec,
  type ReplicaPhase,
} from "../crds/api/index.ts";
import { errorText, KubeApiError, KubeRest } from "../kube/rest.ts";
import type { NodeAgentMetrics, ReplicaGauges } from "./metrics.ts";
import type { ModelCache } from "./model-cache.ts";
import { estimateReplica, ReplicaEngine } from "./replica-engine.ts";
import { ReplicaFailure } from "./replica-failure.ts";

export interface ReplicaSlot {
  namespace: string;
  name: string;
  uid: string;
  generation: number;
  model: string;
  /** Whether /v1/embeddings is served (spec.engine.embeddings). */
  embeddings: boolean;
  phase: ReplicaPhase;
  engine: ReplicaEngine | undefined;
  /** Model memory held for this replica from admission until it is unloaded. */
  memoryBytes: number;
  /** Aborts the load and every request of the replica when it goes away. */
  stop: AbortController;
  cachedPath: string | undefined;
}

export interface ReplicaManagerOptions {
  kubeConfig: KubeConfig;
  nodeName: string;
  llama: Llama;
  cache: ModelCache;
  modelMemoryBytes: number;
  /** The most llama.cpp threads one replica may use; unset spec.engine.threads are measured up to it. */
  threads: number;
  queueLimit: number;
  /** http://<address>:<port>, the start of every endpoint. */
  endpointBase: string;
  metrics: NodeAgentMetrics;
  log: FastifyBaseLogger;
  onCacheChanged: () => void;
}

export class ReplicaManager {
  private readonly slots = new Map<string, ReplicaSlot>();
  private readonly api: KubeRest;
  private readonly options: ReplicaManagerOptions;
  private draining = false;

  constructor(options: ReplicaManagerOptions) {
    this.options = options;
    this.api = new KubeRest(options.kubeConfig);
  }

  /** A Ready replica of this node, or undefined. */
  ready(namespace: string, name: string): ReplicaSlot | undefined {
    const slot = this.slots.get(`${namespace}/${name}`);
    return slot?.phase === "Ready" && slot.engine ? slot : undefined;
  }

  gauges(): ReplicaGauges[] {
    return [...this.slots.values()].flatMap((s) =>
      s.engine
        ? [
            {
              namespace: s.namespace,
              replica: s.name,
              model: s.model,
              queued: s.engine.pool.queued,
              running: s.engine.pool.busy,
              maxRunning: s.engine.pool.maxBusy,
              sequences: s.engine.pool.size,
            },
          ]
        : [],
    );
  }

  upsert(replica: ModelReplica): void {
    if (replica.spec?.nodeName !== this.options.nodeName || this.draining) return;
    const key = `${replica.metadata.namespace}/${replica.metadata.name}`;
    if (replica.metadata.deletionTimestamp) {
      this.remove(replica);
      return;
    }
    const existing = this.slots.get(key);
    const generation = replica.metadata.generation ?? 0;
    if (existing && existing.uid === replica.metadata.uid && existing.generation === generation) return;
    if (existing) void this.unload(existing, "the replica changed");
    const slot: ReplicaSlot = {
      namespace: replica.metadata.namespace ?? "default",
      name: replica.metadata.name ?? "",
      uid: replica.metadata.uid ?? "",
      generation,
      model: replica.spec.model,
      embeddings: replica.spec.engine?.embeddings !== false,
      phase: "Pending",
      engine: undefined,
      memoryBytes: 0,
      stop: new AbortController(),
      cachedPath: undefined,
    };
    this.slots.set(key, slot);
    void this.load(slot, replica);
  }

  remove(replica: ModelReplica): void {
    const slot = this.slots.get(`${replica.metadata.namespace}/${replica.metadata.name}`);
    if (slot && slot.uid === replica.metadata.uid) void this.unload(slot, "the replica was deleted");
  }

  synced(all: ModelReplica[]): void {
    const alive = new Set(all.map((r) => r.metadata.uid));
    for (const slot of this.slots.values()) if (!alive.has(slot.uid)) void this.unload(slot, "the replica is gone");
  }

  /** Stop taking work, let running requests finish (up to the deadline), report Terminating, unload all. */
  async drain(deadlineMs: number): Promise<void> {
    this.draining = true;
    const slots = [...this.slots.values()];
    await Promise.all(
      slots.map((s) =>
        this.writeStatus(s, {
          phase: "Terminating",
          reason: "NodeAgentStopping",
          message: "the node-agent is stopping",
        }),
      ),
    );
    for (const s of slots) s.engine?.pool.close();
    const until = Date.now() + deadlineMs;
    while (Date.now() < until && slots.some((s) => (s.engine?.pool.busy ?? 0) > 0))
      await new Promise((r) => setTimeout(r, 50));
    await Promise.all(slots.map((s) => this.unload(s, "the node-agent is stopping")));
  }

  private usedMemory(except: ReplicaSlot): number {
    let used = 0;
    for (const s of this.slots.values()) if (s !== except) used += s.memoryBytes;
    return used;
  }

  private async load(slot: ReplicaSlot, replica: ModelReplica): Promise<void> {
    const { log, cache, llama, metrics } = this.options;
    const labels = { namespace: slot.namespace, replica: slot.name, model: slot.model };
    const started = performance.now();
    try {
      const spec = modelReplicaSpec.parse(replica.spec);
      await this.writeStatus(slot, {
        phase: "Pending",
        reason: "Admitted",
        message: "the node-agent took the replica",
      });
      const remote = spec.source.url !== undefined || spec.source.hf !== undefined;
      if (remote)
        await this.writeStatus(slot, {
          phase: "Downloading",
          reason: "Downloading",
          message: "fetching the model file",
        });
      const file = await cache.fetch(spec.source, {
        signal: slot.stop.signal,
        onProgress: (progress) => void this.writeStatus(slot, { phase: "Downloading", progress }),
      });
      if (remote) this.options.onCacheChanged();
      this.check(slot);
      cache.pin(file.path);
      slot.cachedPath = file.path;
      const estimate = await estimateReplica(llama, file.path, spec.engine);
      this.check(slot);
      const free = this.options.modelMemoryBytes - this.usedMemory(slot);
      if (estimate.memoryBytes > free)
        throw new ReplicaFailure(
          "InsufficientMemory",
          `the model needs about ${estimate.memoryBytes} bytes of model memory but this node has ${Math.max(free, 0)} free`,
        );
      slot.memoryBytes = Math.max(estimate.memoryBytes, spec.memoryBytes);
      await this.writeStatus(slot, {
        phase: "Loading",
        reason: "Loading",
        message: `loading a ${estimate.architecture} model`,
      });
      const engine = await ReplicaEngine.load(llama, file.path, spec.engine, {
        maxThreads: this.options.threads,
        queueLimit: this.options.queueLimit,
      });
      if (slot.stop.signal.aborted) {
        await engine.dispose();
        return;
      }
      slot.engine = engine;
      if (engine.measuredThreads.length)
        log.info(
          { replica: `${slot.namespace}/${slot.name}`, measured: engine.measuredThreads, threads: engine.threads },
          `measured thread counts: ${engine.measuredThreads.map((m) => `${m.threads} → ${m.tokensPerSecond} tokens/s`).join(", ")}; using ${engine.threads}`,
        );
      const tokensPerSecond = await engine.warmUp();
      this.check(slot);
      engine.pool.maxBusy = 0;
      const loadSeconds = (performance.now() - started) / 1000;
      metrics.loadSeconds.set(labels, loadSeconds);
      metrics.modelMemory.set(labels, estimate.memoryBytes);
      metrics.warmupTokensPerSecond.set(labels, tokensPerSecond);
      slot.phase = "Ready";
      await this.writeStatus(slot, {
        phase: "Ready",
        reason: "Serving",
        message: `serving with ${engine.threads} thread(s); warm-up generated ${tokensPerSecond} tokens/s`,
        endpoint: `${this.options.endpointBase}/replicas/${slot.namespace}/${slot.name}`,
        memoryBytes: estimate.memoryBytes,
        tokensPerSecond,
        threads: engine.threads,
      });
      log.info(
        { replica: `${slot.namespace}/${slot.name}`, loadSeconds, tokensPerSecond, threads: engine.threads },
        "replica ready",
      );
    } catch (err) {
      if (slot.stop.signal.aborted) return;
      const failure =
        err instanceof ReplicaFailure
          ? err
          : new ReplicaFailure("LoadFailed", `the replica could not be loaded: ${(err as Error).message}`);
      log.warn({ replica: `${slot.namespace}/${slot.name}`, reason: failure.reason }, failure.message);
      await slot.engine?.dispose().catch(() => {});
      slot.engine = undefined;
      if (slot.cachedPath) cache.unpin(slot.cachedPath);
      slot.cachedPath = undefined;
      slot.memoryBytes = 0;
      slot.phase = "Failed";
      await this.writeStatus(slot, { phase: "Failed", reason: failure.reason, message: failure.message });
    }
  }

  /** Throws out of a load whose replica went away meanwhile. */
  private check(slot: ReplicaSlot): void {
    if (slot.stop.signal.aborted) throw new Error("the replica went away while loading");
  }

  private async unload(slot: ReplicaSlot, why: string): Promise<void> {
    const key = `${slot.namespace}/${slot.name}`;
    if (this.slots.get(key) === slot) this.slots.delete(key);
    slot.stop.abort(new Error(why));
    const engine = slot.engine;
    slot.engine = undefined;
    slot.memoryBytes = 0;
    if (slot.cachedPath) this.options.cache.unpin(slot.cachedPath);
    slot.cachedPath = undefined;
    if (engine) {
      await engine.dispose().catch((err) => this.options.log.warn({ err: errorText(err) }, "unload failed"));
      this.options.log.info({ replica: key, why }, "replica unloaded");
    }
  }

  private async writeStatus(
    slot: ReplicaSlot,
    status: Omit<ModelReplicaStatus, "observedGeneration" | "conditions"> & { phase: ReplicaPhase },
  ): Promise<void> {
    if (slot.stop.signal.aborted && status.phase !== "Terminating") return;
    const ready = status.phase === "Ready";
    const body: Record<string, unknown> = {
      status: {
        endpoint: null,
        progress: null,
        ...status,
        observedGeneration: slot.generation,
        ...(status.reason
          ? {
              conditions: [
                {
                  type: "Ready",
                  status: ready ? "True" : "False",
                  reason: status.reason,
                  message: status.message ?? "",
                  observedGeneration: slot.generation,
                  lastTransitionTime: new Date().toISOString(),
                },
              ],
            }
          : {}),
      },
    };
    if (status.phase === "Downloading" && !status.reason) {
      // Progress ticks touch only the progress.
      body.status = { progress: status.progress, observedGeneration: slot.generation };
    }
    try {
      await this.api.patch(
        `/apis/${API_VERSION}/namespaces/${slot.namespace}/${modelReplicaDefinition.plural}/${slot.name}/status`,
        body,
        "merge",
      );
    } catch (err) {
      if (err instanceof KubeApiError && err.code === 404) return;
      this.options.log.warn({ replica: `${slot.namespace}/${slot.name}`, err: errorText(err) }, "status write failed");
    }
  }
}
