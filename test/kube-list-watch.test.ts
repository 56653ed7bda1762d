// The list/watch loop every component shares (kube/list-watch.ts), against the real API server:
// - a dropped watch resumes from its resourceVersion without listing again, and the retries while the
//   server is unreachable back off within their bounds (a TCP relay of ours is what breaks);
// - a resourceVersion the server no longer keeps (410 Gone) means one new list, and an object deleted
//   meanwhile is handed on as deleted, so nobody's state keeps it; 410 again and again backs off;
// - a custom resource's list is read to its last page;
// - objects are stored without managedFields and the last-applied annotation.
import {
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type KubernetesObject,
  type V1ConfigMap,
  Watch,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { API_VERSION, GROUP, type RateLimitPolicy, VERSION } from "../crds/api/index.ts";
import {
  type BackoffOptions,
  backoffDelay,
  ListWatch,
  type ListWatchEventType,
  stripUnusedFields,
  watchIdleTimeoutMs,
} from "../kube/list-watch.ts";
import { createNamespaces } from "./operator-support.ts";
import { installCrds } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { relayedKubeConfig } from "./support/tcp-relay.ts";

const ns = "kube-list-watch";
const backoff: BackoffOptions = { initialMs: 100, maxMs: 800 };
const running: { stop(): void }[] = [];

function configMaps(kubeConfig: KubeConfig, extra: Partial<ConstructorParameters<typeof ListWatch>[0]> = {}) {
  const failures: number[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  /** Resolves once `count` attempts in a row have failed. */
  const failed = (count: number) => new Promise<void>((resolve) => waiters.push({ count, resolve }));
  const listWatch = new ListWatch<V1ConfigMap>({
    kubeConfig,
    path: `/api/v1/namespaces/${ns}/configmaps`,
    backoff,
    log: (_level, message, fields) => {
      if (message !== "list/watch failed; retrying") return;
      failures.push(fields?.retryInMs as number);
      for (const w of waiters) if (failures.length >= w.count) w.resolve();
    },
    ...(extra as object),
  });
  running.push(listWatch);
  return { listWatch, failures, failed };
}

/** Resolves on the first event that matches; the deadline only turns a hang into a failure. */
function nextEvent<T extends KubernetesObject>(
  listWatch: ListWatch<T>,
  match: (type: ListWatchEventType, o: T) => boolean,
  what: string,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 60_000);
    listWatch.on((type, o) => {
      if (match(type, o)) {
        clearTimeout(deadline);
        resolve(o);
      }
    });
  });
}

const localKubeConfig = () => {
  const kc = new KubeConfig();
  kc.loadFromFile(inject("kubeconfig"));
  return kc;
};

beforeAll(async () => {
  await installCrds();
  await createNamespaces(ns);
});

afterAll(async () => {
  for (const lw of running) lw.stop();
  await kubectl(["delete", "namespace", ns, "--wait=false"]);
});

describe("backoff", () => {
  it("doubles from the initial wait, never goes above the cap, and takes a random half off", () => {
    const all = [0, 1, 2, 3, 10, 100].flatMap((attempt) => [
      backoffDelay(attempt, backoff, () => 0),
      backoffDelay(attempt, backoff, () => 0.999),
    ]);
    expect(all.slice(0, 8)).toEqual([50, 100, 100, 200, 200, 400, 400, 800]);
    expect(Math.max(...all)).toBe(backoff.maxMs);
  });
});

describe("watch idle cut", () => {
  // What this guards is that a quiet watch lives past the API server's bookmark (about a minute) and so
  // keeps its resourceVersion current. Proving that against the real server means a watch quiet for over
  // 90 s per run, too slow for every test run, so this checks the setting: client-node's private
  // field still exists with its 30 s default (an upgrade that renames it fails here), and ListWatch
  // raises it above a minute.
  it("raises client-node's 30 s idle cut above the API server's bookmark interval", () => {
    const field = (w: Watch) => (w as unknown as { requestTimeoutMs?: number }).requestTimeoutMs;
    expect(field(new Watch(localKubeConfig()))).toBe(30_000);
    const listWatch = new ListWatch<V1ConfigMap>({ kubeConfig: localKubeConfig(), path: "/api/v1/configmaps" });
    const watcher = (listWatch as unknown as { watcher: Watch }).watcher;
    expect(field(watcher)).toBe(watchIdleTimeoutMs);
    expect(watchIdleTimeoutMs).toBeGreaterThan(60_000);
  });
});

describe("stop", () => {
  it("is final: starting a stopped list/watch again is refused rather than running a second loop", () => {
    const listWatch = new ListWatch<V1ConfigMap>({
      kubeConfig: localKubeConfig(),
      path: `/api/v1/namespaces/${ns}/configmaps`,
    });
    listWatch.start();
    listWatch.start();
    listWatch.stop();
    expect(() => listWatch.start()).toThrow(/was stopped; make a new one/);
  });
});

describe("list/watch against the API server", () => {
  it("resumes a dropped watch from its resourceVersion, without a relist, backing off while the server is away", async () => {
    const { relay, kubeConfig } = await relayedKubeConfig(inject("kubeconfig"));
    const { listWatch, failures, failed } = configMaps(kubeConfig);
    listWatch.start();
    await listWatch.synced;
    const before = nextEvent(listWatch, (t, o) => t === "added" && o.metadata?.name === "before", "'before'");
    await kubectlOk(["create", "configmap", "before", "-n", ns]);
    await before;

    await relay.break();
    await kubectlOk(["create", "configmap", "during", "-n", ns]);
    // Six failed attempts in a row: the waits must follow the doubling and stay under the cap.
    await failed(6);
    failures.slice(0, 6).forEach((waited, attempt) => {
      const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** attempt);
      expect(waited).toBeGreaterThanOrEqual(ceiling / 2);
      expect(waited).toBeLessThanOrEqual(ceiling);
    });
    expect(listWatch.get("during", ns)).toBeUndefined();

    const during = nextEvent(listWatch, (t, o) => t === "added" && o.metadata?.name === "during", "'during'");
    await relay.open();
    await during;
    // Caught up from the resourceVersion it had: still the one list it made at the start.
    expect(listWatch.stats.lists).toBe(1);
    expect(listWatch.stats.watches).toBeGreaterThan(1);
    await relay.break();
  }, 120_000);

  it("lists again after 410 Gone and hands on what was deleted meanwhile", async () => {
    const policy = (name: string) =>
      JSON.stringify({
        apiVersion: API_VERSION,
        kind: "RateLimitPolicy",
        metadata: { name, namespace: ns },
        spec: { requestsPerMinute: 60 },
      });
    await kubectlOk(["apply", "-f", "-"], policy("doomed"));
    const custom = localKubeConfig().makeApiClient(CustomObjectsApi);
    const ref = { group: GROUP, version: VERSION, namespace: ns, plural: "ratelimitpolicies" };
    let first = true;
    const listWatch = new ListWatch<RateLimitPolicy & { metadata: object }>({
      kubeConfig: localKubeConfig(),
      path: `/apis/${API_VERSION}/namespaces/${ns}/ratelimitpolicies`,
      backoff,
      // The first list is a real one, after which "doomed" is deleted; its resourceVersion is then replaced
      // by "1", older than the API server keeps for this kind (its watch cache starts when the CRD is
      // established), so the watch is answered 410 Gone, as when a watcher has been away too long.
      list: async () => {
        const page = (await custom.listNamespacedCustomObject(ref)) as {
          items: (RateLimitPolicy & { metadata: object })[];
          metadata: { resourceVersion: string };
        };
        if (!first) return { items: page.items, resourceVersion: page.metadata.resourceVersion };
        first = false;
        await custom.deleteNamespacedCustomObject({ ...ref, name: "doomed" });
        return { items: page.items, resourceVersion: "1" };
      },
    });
    running.push(listWatch);
    const deleted = nextEvent(
      listWatch,
      (t, o) => t === "deleted" && o.metadata?.name === "doomed",
      "'doomed' deleted",
    );
    listWatch.start();
    await listWatch.synced;
    await deleted;
    expect(listWatch.get("doomed", ns)).toBeUndefined();
    expect(listWatch.stats.relistsAfterGone).toBe(1);
    expect(listWatch.stats.lists).toBe(2);

    // After the relist it watches from the new resourceVersion as usual.
    const later = nextEvent(listWatch, (t, o) => t === "added" && o.metadata?.name === "later", "'later'");
    await kubectlOk(["apply", "-f", "-"], policy("later"));
    await later;
    expect(listWatch.stats.lists).toBe(2);
  }, 120_000);

  it("backs off from the second 410 Gone in a row, whatever the list returns", async () => {
    // A list that always hands the watch a resourceVersion older than the server keeps, as a get by name
    // once did with an old object's own resourceVersion: every watch is answered 410 Gone.
    const waits: number[] = [];
    let resolveWaits!: () => void;
    const fourWaits = new Promise<void>((resolve) => {
      resolveWaits = resolve;
    });
    const custom = localKubeConfig().makeApiClient(CustomObjectsApi);
    const ref = { group: GROUP, version: VERSION, namespace: ns, plural: "ratelimitpolicies" };
    const listWatch = new ListWatch<RateLimitPolicy & { metadata: object }>({
      kubeConfig: localKubeConfig(),
      path: `/apis/${API_VERSION}/namespaces/${ns}/ratelimitpolicies`,
      backoff,
      list: async () => {
        const page = (await custom.listNamespacedCustomObject(ref)) as {
          items: (RateLimitPolicy & { metadata: object })[];
        };
        return { items: page.items, resourceVersion: "1" };
      },
      log: (_level, message, fields) => {
        if (!message.startsWith("resourceVersion expired again")) return;
        waits.push(fields?.retryInMs as number);
        if (waits.length === 4) resolveWaits();
      },
    });
    running.push(listWatch);
    listWatch.start();
    await fourWaits;
    listWatch.stop();
    // The first 410 relists at once; each one after it waits, doubling within the backoff's bounds.
    expect(listWatch.stats.relistsAfterGone).toBe(5);
    waits.forEach((waited, attempt) => {
      const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** attempt);
      expect(waited).toBeGreaterThanOrEqual(ceiling / 2);
      expect(waited).toBeLessThanOrEqual(ceiling);
    });
  }, 60_000);

  it("lists every page of a custom resource, not only the first", async () => {
    const policies = Array.from({ length: 5 }, (_, i) => ({
      apiVersion: API_VERSION,
      kind: "RateLimitPolicy",
      metadata: { name: `paged-${i}`, namespace: ns },
      spec: { requestsPerMinute: 60 },
    }));
    await kubectlOk(["apply", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: policies }));
    const listWatch = new ListWatch<RateLimitPolicy & { metadata: object }>({
      kubeConfig: localKubeConfig(),
      path: `/apis/${API_VERSION}/namespaces/${ns}/ratelimitpolicies`,
      pageSize: 2,
    });
    running.push(listWatch);
    listWatch.start();
    await listWatch.synced;
    const names = listWatch.list(ns).map((p) => p.metadata?.name);
    expect(names.filter((n) => n?.startsWith("paged-")).sort()).toEqual(policies.map((p) => p.metadata.name));
  }, 60_000);

  it("stores objects without managedFields and kubectl's last-applied annotation", async () => {
    const { listWatch } = configMaps(localKubeConfig());
    const applied = nextEvent(listWatch, (_t, o) => o.metadata?.name === "applied", "'applied'");
    listWatch.start();
    await listWatch.synced;
    const manifest = JSON.stringify({
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "applied", namespace: ns, annotations: { keep: "me" } },
      data: { a: "b" },
    });
    await kubectlOk(["apply", "-f", "-"], manifest);
    const seen = await applied;
    expect(seen.metadata?.managedFields).toBeUndefined();
    expect(seen.metadata?.annotations).toEqual({ keep: "me" });
    expect(seen.data).toEqual({ a: "b" });
    // What the server holds still has both: only the copy in the store is trimmed.
    const stored = await localKubeConfig()
      .makeApiClient(CoreV1Api)
      .readNamespacedConfigMap({ name: "applied", namespace: ns });
    expect(stored.metadata?.managedFields?.length).toBeGreaterThan(0);
    expect(stripUnusedFields(stored).metadata?.annotations).toEqual({ keep: "me" });
  }, 60_000);
});
