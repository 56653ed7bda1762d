// The operator's informer keeps its cache current across a broken connection. The API server is real; a
// plain TCP relay in front of it (ours, in this test) is what breaks, as a network or a load balancer would.
import type { V1ConfigMap } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Informer } from "../operator/runtime/informer.ts";
import type { Logger } from "../operator/runtime/log.ts";
import { createNamespaces } from "./operator-support.ts";
import { kubectl, kubectlOk } from "./support/kubectl.ts";
import { eventually } from "./support/processes.ts";
import { type Relay, relayedKubeConfig } from "./support/tcp-relay.ts";

const ns = "op-informer";
const lines: string[] = [];
const log: Logger = {
  info: (m) => lines.push(m),
  warn: (m) => lines.push(m),
  error: (m) => lines.push(m),
  child: () => log,
};

let relay: Relay;
let informer: Informer<V1ConfigMap>;

beforeAll(async () => {
  await createNamespaces(ns);
  const relayed = await relayedKubeConfig(inject("kubeconfig"));
  relay = relayed.relay;
  informer = new Informer<V1ConfigMap>(
    relayed.kubeConfig,
    { path: `/api/v1/namespaces/${ns}/configmaps`, kind: "ConfigMap" },
    log,
  );
});

afterAll(async () => {
  informer?.stop();
  await relay?.break();
  await kubectl(["delete", "namespace", ns, "--wait=false"]);
});

describe("informer", () => {
  it("syncs, follows changes, and after the connection breaks starts again and catches up", async () => {
    const changes: string[] = [];
    informer.onChange((o) => changes.push(o.metadata?.name ?? ""));
    await informer.start();
    expect(informer.hasSynced).toBe(true);
    await kubectlOk(["create", "configmap", "before", "-n", ns]);
    await eventually("the informer to see 'before'", async () => (informer.get("before", ns) ? true : undefined));

    await relay.break();
    await kubectlOk(["create", "configmap", "during", "-n", ns]);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(informer.get("during", ns)).toBeUndefined();
    await relay.open();

    await eventually(
      "the informer to catch up after the break",
      async () => (informer.get("during", ns) ? true : undefined),
      45_000,
    );
    expect(lines).toContain("list/watch failed; retrying");
    expect(changes).toContain("during");
    await kubectlOk(["create", "configmap", "after", "-n", ns]);
    await eventually("the informer to follow new changes", async () => (informer.get("after", ns) ? true : undefined));
  }, 90_000);
});
