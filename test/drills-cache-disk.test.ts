// Fault drill: the disk of the model cache fills up during a download. The cache is a 600 KiB tmpfs
// mounted for this test (the model is 1.2 MB), so the write fails with a real ENOSPC; the cache is told
// it may use more than that, as a disk shared with other files would let it believe.
// Must hold: the replica ends Failed with reason CacheDiskFull and a clear message; the agent keeps
// serving its other replica; the partial file does not poison the next attempt, which resumes from it
// once there is room and passes the sha256 check.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installCrds } from "./support/crds.ts";
import { createNamespace } from "./support/gateway.ts";
import { createReplica, settledReplica } from "./support/model-replica.ts";
import {
  type ModelHost,
  NODE_AGENT_TOKEN,
  startAgent,
  startModelHost,
  type TestAgent,
  tinyModel,
  tinyModelSha256,
} from "./support/node-agent.ts";

const ns = "drill-cache-disk";
const mountPoint = mkdtempSync(join(tmpdir(), "pomona-full-cache-"));
let host: ModelHost;
let agent: TestAgent;
const oneSequence = { parallelSequences: 1 };
const settled = (name: string) => settledReplica(agent, ns, name, 120_000);

beforeAll(async () => {
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=600k", "tmpfs", mountPoint]);
  await installCrds();
  await createNamespace(ns);
  host = await startModelHost();
  agent = await startAgent("drill-cache-node", {
    NODE_EXTRA_CA_CERTS: host.caFile,
    POMONA_MODEL_ALLOWED_HOSTS: host.url,
    POMONA_CACHE_DIR: mountPoint,
    POMONA_CACHE_MAX_BYTES: "64Mi",
  });
}, 120_000);

afterAll(async () => {
  await agent?.process.stop();
  await host?.close();
  execFileSync("umount", [mountPoint]);
  rmSync(mountPoint, { recursive: true, force: true });
});

describe("the model cache's disk fills up", () => {
  it("fails the download with CacheDiskFull, keeps serving, and resumes once there is room", {
    timeout: 240_000,
  }, async () => {
    await createReplica(agent, ns, "served", { source: { path: tinyModel }, engine: oneSequence });
    expect((await settled("served")).status?.phase).toBe("Ready");

    const source = { url: `${host.url}/models/stories260K.gguf`, sha256: tinyModelSha256 };
    await createReplica(agent, ns, "too-big-for-disk", { source, engine: oneSequence });
    const failed = await settled("too-big-for-disk");
    expect(failed.status?.phase).toBe("Failed");
    expect(failed.status?.reason).toBe("CacheDiskFull");
    expect(failed.status?.message).toMatch(/disk of the model cache .* is full after \d+ bytes/);
    expect(readdirSync(mountPoint).filter((f) => f.endsWith(".part"))).toHaveLength(1);

    const client = new OpenAI({
      apiKey: NODE_AGENT_TOKEN,
      baseURL: `${agent.url}/replicas/${ns}/served/v1`,
      maxRetries: 0,
    });
    const answer = await client.completions.create({ model: "stories", prompt: "Once", max_tokens: 4 });
    expect(answer.usage?.completion_tokens).toBe(4);

    // Room again: a new replica of the same file resumes the partial download and checks the whole file.
    execFileSync("mount", ["-o", "remount,size=8m", mountPoint]);
    host.ranges.length = 0;
    await createReplica(agent, ns, "after-room", { source, engine: oneSequence });
    const ready = await settled("after-room");
    expect(ready.status?.phase, ready.status?.message).toBe("Ready");
    expect(host.ranges.some((r) => r?.startsWith("bytes="))).toBe(true);
    expect(readdirSync(mountPoint)).toContain(`${tinyModelSha256}.gguf`);
    expect(agent.process.child.exitCode).toBeNull();
  });
});
