// The operator's index of ApiKeys by the RateLimitPolicy they name (operator/cluster.ts, kept by the informer,
// operator/runtime/cache-index.ts) follows the API server: keys filed before and after it was added, a key
// moved to another policy, a key deleted, the same policy name in two namespaces. Real API server and CRDs.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_VERSION, type ApiKey } from "../crds/api/index.ts";
import { objectKey } from "../kube/list-watch.ts";
import { byPolicy, policyOf } from "../operator/cluster.ts";
import { Informer } from "../operator/runtime/informer.ts";
import type { Logger } from "../operator/runtime/log.ts";
import { createNamespaces, kubeConfig } from "./operator-support.ts";
import { installCrds } from "./support/crds.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";

const [a, b] = ["op-index-a", "op-index-b"];
const log: Logger = { info: () => {}, warn: () => {}, error: () => {}, child: () => log };

let informer: Informer<ApiKey & { metadata: { name: string; namespace: string } }>;
/** Waiters for the informer's next change that satisfies them: the test waits on the cache's own events. */
const waiters = new Set<{ done: (k: ApiKey) => boolean; resolve: () => void }>();
const changeOf = (name: string, namespace: string, done: (k: ApiKey | undefined) => boolean) =>
  new Promise<void>((resolve) => {
    if (done(informer.get(name, namespace))) return resolve();
    waiters.add({
      done: (k) =>
        k.metadata?.name === name && k.metadata.namespace === namespace && done(informer.get(name, namespace)),
      resolve,
    });
  });

const apply = (name: string, namespace: string, policy: string) =>
  kubectlOk(
    ["apply", "-f", "-"],
    JSON.stringify({
      apiVersion: API_VERSION,
      kind: "ApiKey",
      metadata: { name, namespace },
      spec: { owner: "index-test", rateLimitPolicy: policy },
    }),
  );
const applied = async (name: string, namespace: string, policy: string) => {
  const seen = changeOf(name, namespace, (k) => k?.spec.rateLimitPolicy === policy);
  await apply(name, namespace, policy);
  await seen;
};
const named = (namespace: string, policy: string) =>
  informer.byIndex(byPolicy, `${namespace}/${policy}`).map(objectKey).sort();

beforeAll(async () => {
  await installCrds();
  await createNamespaces(a, b);
  informer = new Informer(kubeConfig(), { path: `/apis/${API_VERSION}/apikeys`, kind: "ApiKey" }, log);
  informer.onChange((k) => {
    for (const w of waiters)
      if (w.done(k)) {
        waiters.delete(w);
        w.resolve();
      }
  });
});

afterAll(async () => {
  informer?.stop();
  await kubectl(["delete", "namespace", a, b, "--wait=false"]);
});

describe("the ApiKey index by RateLimitPolicy", () => {
  it("files keys under their namespace's policy and follows changes and deletions", async () => {
    // One key exists before the informer starts and the index is added.
    await apply("early", a, "gold");
    await informer.start();
    informer.addIndex(byPolicy, policyOf);
    expect(named(a, "gold")).toEqual([`${a}/early`]);

    await applied("late", a, "gold");
    await applied("other", a, "silver");
    await applied("late", b, "gold");
    expect(named(a, "gold")).toEqual([`${a}/early`, `${a}/late`]);
    expect(named(a, "silver")).toEqual([`${a}/other`]);
    expect(named(b, "gold")).toEqual([`${b}/late`]);

    // A key that names another policy leaves the first one's group.
    await applied("early", a, "silver");
    expect(named(a, "gold")).toEqual([`${a}/late`]);
    expect(named(a, "silver")).toEqual([`${a}/early`, `${a}/other`]);

    const gone = changeOf("late", a, (k) => k === undefined);
    await kubectlOk(["delete", "apikey", "late", "-n", a]);
    await gone;
    expect(named(a, "gold")).toEqual([]);
    expect(named(b, "gold")).toEqual([`${b}/late`]);
    expect(() => informer.byIndex("no-such-index", `${a}/gold`)).toThrow(/no index/);
  });
});
