// The node-agent's table of requests the gateway may cancel by id: bounded, strict about ids, and a request
// leaves it when it is over.
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { CancellableRequests } from "../node-agent/cancellable-requests.ts";

describe("requests cancellable by id", () => {
  it("aborts the request with the id, once, and forgets it", () => {
    const table = new CancellableRequests();
    const id = randomUUID();
    const controller = new AbortController();
    table.add(id, controller);
    expect(table.cancel(id)).toBe(true);
    expect(controller.signal.aborted).toBe(true);
    expect(table.cancel(id)).toBe(false);
  });

  it("forgets a request that is over, so its id cancels nothing", () => {
    const table = new CancellableRequests();
    const id = randomUUID();
    const controller = new AbortController();
    const forget = table.add(id, controller);
    forget();
    expect(table.cancel(id)).toBe(false);
    expect(controller.signal.aborted).toBe(false);
  });

  it("registers no absent, malformed or duplicate id, and nothing past its limit", () => {
    const table = new CancellableRequests(2);
    const absent = new AbortController();
    table.add(undefined, absent);
    for (const id of ["short", "has/a/slash-and-is-long-enough", "x".repeat(65), ["a", "b"]]) {
      table.add(id, new AbortController());
      if (typeof id === "string") expect(table.cancel(id)).toBe(false);
    }
    const first = new AbortController();
    const id = randomUUID();
    table.add(id, first);
    const taken = new AbortController();
    table.add(id, taken);
    table.add(randomUUID(), new AbortController());
    const over = randomUUID();
    table.add(over, new AbortController());
    expect(table.cancel(over)).toBe(false);
    expect(table.cancel(id)).toBe(true);
    expect(first.signal.aborted).toBe(true);
    expect(taken.signal.aborted).toBe(false);
    expect(absent.signal.aborted).toBe(false);
  });
});
