// The node-agent's model cache on its own: resumable downloads, the sha256 check, and LRU eviction. The
// model host is a plain-http server in this process (the cache module takes any URL; the https path
// through the whole agent is proven in node-agent.test.ts).
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modelSourcePolicy } from "../model-source/policy.ts";
import { ModelCache } from "../node-agent/model-cache.ts";
import { ReplicaFailure } from "../node-agent/replica-failure.ts";
import { tinyModel, tinyModelSha256 } from "./support/node-agent.ts";

const model = readFileSync(tinyModel);
/** A second, different file so two cache entries exist. */
const other = Buffer.concat([model, Buffer.from("another file")]);
const files: Record<string, Buffer> = {
  "/a.gguf": model,
  "/b.gguf": other,
  "/owner/repo/resolve/main/dir/tiny.gguf": model,
};
const ranges: (string | undefined)[] = [];
let server: Server;
let base: string;

beforeAll(async () => {
  // Serves byte ranges as a CDN does, so a download can resume where it stopped.
  server = createServer((req, res) => {
    ranges.push(req.headers.range);
    const file = files[req.url ?? ""];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (m) {
      const start = Number(m[1]);
      res.writeHead(206, {
        "content-length": file.length - start,
        "content-range": `bytes ${start}-${file.length - 1}/${file.length}`,
      });
      res.end(file.subarray(start));
      return;
    }
    res.writeHead(200, { "content-length": file.length }).end(file);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

// The CDN stand-in listens on loopback: allowed as an origin, as an administrator would list a mirror.
const newCache = (maxBytes?: number) =>
  new ModelCache(
    mkdtempSync(join(tmpdir(), "pomona-cache-")),
    maxBytes,
    undefined,
    modelSourcePolicy({ allowedHosts: base, hfEndpoint: "https://huggingface.co" }),
  );

describe("model cache", () => {
  it("resumes a partial download with a Range request and checks the whole file's sha256", async () => {
    const cache = newCache();
    await cache.init();
    const half = Math.floor(model.length / 2);
    writeFileSync(join(cache.dir, `${tinyModelSha256}.gguf.part`), model.subarray(0, half));
    ranges.length = 0;
    const progress: number[] = [];
    const cached = await cache.fetch(
      { url: `${base}/a.gguf`, sha256: tinyModelSha256 },
      { onProgress: (p) => progress.push(p.bytesDone) },
    );
    expect(ranges).toEqual([`bytes=${half}-`]);
    expect(cached.path).toBe(join(cache.dir, `${tinyModelSha256}.gguf`));
    expect(createHash("sha256").update(readFileSync(cached.path)).digest("hex")).toBe(tinyModelSha256);
    expect(progress.at(-1)).toBe(model.length);
    expect(await cache.digests()).toEqual([tinyModelSha256]);
    // A second fetch is a cache hit: no request at all.
    ranges.length = 0;
    await cache.fetch({ url: `${base}/a.gguf`, sha256: tinyModelSha256 });
    expect(ranges).toEqual([]);
  });

  it("refuses a download whose sha256 differs and leaves nothing behind", async () => {
    const cache = newCache();
    await cache.init();
    const wrong = "f".repeat(64);
    const failure = await cache.fetch({ url: `${base}/a.gguf`, sha256: wrong }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ReplicaFailure);
    expect((failure as ReplicaFailure).reason).toBe("ChecksumMismatch");
    expect(existsSync(join(cache.dir, `${wrong}.gguf`))).toBe(false);
    expect(existsSync(join(cache.dir, `${wrong}.gguf.part`))).toBe(false);
  });

  it("downloads an hf: file reference from the Hub endpoint into the content-addressed cache, checking its sha256", async () => {
    const cache = new ModelCache(mkdtempSync(join(tmpdir(), "pomona-cache-")), undefined, base);
    await cache.init();
    const cached = await cache.fetch({ hf: "hf:owner/repo/dir/tiny.gguf", sha256: tinyModelSha256 });
    expect(cached.path).toBe(join(cache.dir, `${tinyModelSha256}.gguf`));
    expect(await cache.digests()).toEqual([tinyModelSha256]);
    const wrong = "0".repeat(64);
    await expect(cache.fetch({ hf: "hf:owner/repo/dir/tiny.gguf", sha256: wrong })).rejects.toMatchObject({
      reason: "ChecksumMismatch",
    });
  });

  it("answers FileNotFound for a 404 and keeps URL query strings out of messages", async () => {
    const cache = newCache();
    await cache.init();
    const failure = (await cache.fetch({ url: `${base}/missing.gguf?token=s3cret` }).catch((e: unknown) => e)) as
      | ReplicaFailure
      | undefined;
    expect(failure?.reason).toBe("FileNotFound");
    expect(failure?.message).not.toContain("s3cret");
  });

  it("evicts the least recently used file to stay under its byte limit, never a pinned one", async () => {
    const cache = newCache(Math.floor(model.length * 1.5));
    await cache.init();
    const a = await cache.fetch({ url: `${base}/a.gguf`, sha256: tinyModelSha256 });
    const b = await cache.fetch({ url: `${base}/b.gguf` });
    expect(existsSync(a.path)).toBe(false);
    expect(statSync(b.path).size).toBe(other.length);
    cache.pin(b.path);
    const again = await cache.fetch({ url: `${base}/a.gguf`, sha256: tinyModelSha256 });
    expect(existsSync(b.path)).toBe(true);
    expect(existsSync(again.path)).toBe(true);
  });
});
