// The waiting line as a plain module: who gets a freed place, in which order, and how waits end.
import { describe, expect, it } from "vitest";
import { createMetrics } from "../gateway/metrics.ts";
import { ClientGoneError } from "../gateway/upstream/node-client.ts";
import { BATCH_TURN_EVERY, LineRefusal, type PriorityClass, WaitingLine } from "../gateway/upstream/waiting-line.ts";

/** A model with `free` places; take() claims one. */
function places(free = 0) {
  const state = { free };
  const take = () => {
    if (state.free <= 0) return undefined;
    state.free--;
    return true as const;
  };
  return { state, take };
}

function setup(maxPerModel = 100) {
  const line = new WaitingLine<true>({ maxPerModel, metrics: createMetrics() });
  const room = places();
  const served: string[] = [];
  const refused: unknown[] = [];
  const wait = (
    party: string,
    priority: PriorityClass = "interactive",
    label = party,
    signal = new AbortController().signal,
  ) =>
    line.wait("ns/m", { party, priority, deadlineAt: performance.now() + 60_000, signal, take: room.take }).then(
      () => {
        served.push(label);
      },
      (err: unknown) => {
        refused.push(err);
      },
    );
  /** Free one place and let the line hand it out. */
  const freeOne = async () => {
    room.state.free++;
    line.pump("ns/m");
    await new Promise((r) => setImmediate(r));
  };
  return { line, room, served, refused, wait, freeOne };
}

describe("the waiting line", () => {
  it("gives the next place to the key with the fewest requests in service, ties in turn", async () => {
    const { line, served, wait, freeOne } = setup();
    const heavyInService = [line.began("ns/m", "heavy"), line.began("ns/m", "heavy")];
    for (let i = 0; i < 5; i++) void wait("heavy", "interactive", `heavy-${i}`);
    void wait("light", "interactive", "light-0");
    await freeOne();
    // The light key holds nothing; the heavy key holds two: light goes first though it came last.
    expect(served).toEqual(["light-0"]);
    for (const end of heavyInService) end();
    await freeOne();
    await freeOne();
    expect(served).toEqual(["light-0", "heavy-0", "heavy-1"]);
    line.close();
  });

  it("serves interactive before batch, but batch gets one turn in every BATCH_TURN_EVERY", async () => {
    const { line, served, wait, freeOne } = setup();
    for (let i = 0; i < 3; i++) void wait("b", "batch", "batch");
    for (let i = 0; i < 2 * BATCH_TURN_EVERY; i++) void wait(`i${i}`, "interactive", "interactive");
    for (let i = 0; i < 2 * BATCH_TURN_EVERY; i++) await freeOne();
    expect(served.slice(0, BATCH_TURN_EVERY)).toEqual([...Array(BATCH_TURN_EVERY - 1).fill("interactive"), "batch"]);
    expect(served.filter((s) => s === "batch")).toHaveLength(2);
    line.close();
  });

  it("when full, evicts the newest waiter of the key holding the most places, or refuses the newcomer", async () => {
    const { line, wait, refused } = setup(3);
    const heavy = [0, 1, 2].map((i) => wait("heavy", "interactive", `heavy-${i}`));
    // The same key once more: refused.
    await wait("heavy");
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ reason: "full" });
    // Another key: the heavy key's newest leaves for it.
    void wait("light");
    await heavy[2];
    expect(refused).toHaveLength(2);
    expect(refused[1]).toMatchObject({ reason: "full" });
    expect(line.length("ns/m")).toBe(3);
    line.close();
  });

  it("shares a model's slots equally among the keys active on it; a key alone may use them all", () => {
    const line = new WaitingLine<true>({ maxPerModel: 10, metrics: createMetrics() });
    expect(line.shareOf("ns/m", "heavy", 4)).toBe(4);
    const end = line.began("ns/m", "light");
    expect(line.shareOf("ns/m", "heavy", 4)).toBe(2);
    expect(line.shareOf("ns/m", "third", 4)).toBe(2);
    expect(line.shareOf("ns/m", "fourth", 5)).toBe(2);
    end();
    line.retain(new Set());
    expect(line.shareOf("ns/m", "heavy", 4)).toBe(4);
  });

  it("ends a wait at its deadline, when its client leaves, and when the model leaves the config", async () => {
    const line = new WaitingLine<true>({ maxPerModel: 10, metrics: createMetrics() });
    const never = () => undefined;
    const signal = new AbortController().signal;
    await expect(
      line.wait("ns/m", {
        party: "a",
        priority: "interactive",
        deadlineAt: performance.now() + 20,
        signal,
        take: never,
      }),
    ).rejects.toMatchObject({ reason: "deadline" });
    const controller = new AbortController();
    const leaving = line.wait("ns/m", {
      party: "a",
      priority: "interactive",
      deadlineAt: performance.now() + 60_000,
      signal: controller.signal,
      take: never,
    });
    expect(line.length("ns/m")).toBe(1);
    controller.abort();
    await expect(leaving).rejects.toBeInstanceOf(ClientGoneError);
    expect(line.length("ns/m")).toBe(0);
    const closing = line.wait("ns/m", {
      party: "a",
      priority: "batch",
      deadlineAt: performance.now() + 60_000,
      signal,
      take: never,
    });
    line.retain(new Set(["ns/other"]));
    await expect(closing).rejects.toBeInstanceOf(LineRefusal);
    expect(line.length("ns/m")).toBe(0);
  });
});
