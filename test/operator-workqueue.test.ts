// The operator's work queue as plain objects: de-duplication, one worker per key, backoff.
import { describe, expect, it } from "vitest";
import { WorkQueue } from "../operator/runtime/workqueue.ts";

describe("WorkQueue", () => {
  it("hands a key queued many times to one worker once", async () => {
    const q = new WorkQueue();
    q.add("ns/a");
    q.add("ns/a");
    q.add("ns/b");
    expect(q.depth).toBe(2);
    expect(await q.get()).toBe("ns/a");
    expect(await q.get()).toBe("ns/b");
    expect(q.depth).toBe(0);
  });

  it("never gives a key being processed to a second worker, and requeues it after if it changed", async () => {
    const q = new WorkQueue();
    q.add("ns/a");
    const key = await q.get();
    q.add("ns/a");
    expect(q.depth).toBe(0);
    let second: string | undefined;
    void q.get().then((k) => {
      second = k;
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(second).toBeUndefined();
    q.done(key ?? "");
    await new Promise((r) => setTimeout(r, 0));
    expect(second).toBe("ns/a");
  });

  it("backs off per key exponentially and forgets on success", () => {
    const q = new WorkQueue(100, 1000);
    expect([q.addRateLimited("k"), q.addRateLimited("k"), q.addRateLimited("k")]).toEqual([100, 200, 400]);
    expect(q.addRateLimited("other")).toBe(100);
    for (let i = 0; i < 5; i++) q.addRateLimited("k");
    expect(q.addRateLimited("k")).toBe(1000);
    q.forget("k");
    expect(q.addRateLimited("k")).toBe(100);
    q.shutdown();
  });
});
