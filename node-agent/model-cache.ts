/**
 * The node's cache of GGUF files. A path source is used in place; an https source is downloaded into the
 * cache resumably (HTTP Range onto a .part file) through the guarded fetcher (model-source/: allowed hosts,
 * no redirects to private addresses, size and idle limits), checked against its sha256, and kept under an
 * LRU byte limit; an hf:owner/repo:quant source is resolved by node-llama-cpp's own downloader.
 */
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { resolveModelFile } from "node-llama-cpp";
import { defaultHfEndpoint, hfFileUrl, type ModelSource } from "../crds/api/index.ts";
import { fetchModelSource, ModelSourceError, type ModelSourcePolicy } from "../model-source/guarded-fetch.ts";
import { modelSourcePolicy } from "../model-source/policy.ts";
import { showUrl as redactUrl } from "../model-source/show-url.ts";
import { ReplicaFailure } from "./replica-failure.ts";

export interface DownloadProgress {
  bytesDone: number;
  bytesTotal?: number;
}

export interface FetchOptions {
  onProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
}

export interface CachedModel {
  path: string;
  /** Known when the file was checked or downloaded here; a path source without sha256 is not hashed. */
  sha256?: string;
}

export class ModelCache {
  readonly dir: string;
  private maxBytes: number | undefined;
  private readonly hfEndpoint: string;
  private readonly sources: ModelSourcePolicy;
  /** Files in use by loaded replicas are never evicted. */
  private readonly pinned = new Map<string, number>();

  constructor(
    dir: string,
    maxBytes: number | undefined,
    hfEndpoint = defaultHfEndpoint,
    sources = modelSourcePolicy({ allowedHosts: undefined, hfEndpoint }),
  ) {
    this.dir = dir;
    this.maxBytes = maxBytes;
    this.hfEndpoint = hfEndpoint;
    this.sources = sources;
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    if (this.maxBytes === undefined) {
      const { statfs } = await import("node:fs/promises");
      const fs = await statfs(this.dir);
      this.maxBytes = Math.floor((fs.bavail * fs.bsize) / 2);
    }
  }

  pin(path: string): void {
    this.pinned.set(path, (this.pinned.get(path) ?? 0) + 1);
  }

  unpin(path: string): void {
    const n = (this.pinned.get(path) ?? 0) - 1;
    if (n <= 0) this.pinned.delete(path);
    else this.pinned.set(path, n);
  }

  async fetch(source: ModelSource, options: FetchOptions = {}): Promise<CachedModel> {
    if (source.path) return this.useLocal(source.path, source.sha256);
    if (source.url) return this.download(source.url, source.sha256, options);
    if (source.hf) {
      // A file reference is a plain download from the Hub: resumable, content-addressed and checked like a url.
      const file = hfFileUrl(source.hf, this.hfEndpoint);
      return file ? this.download(file, source.sha256, options) : this.resolveHf(source.hf, source.sha256, options);
    }
    throw new ReplicaFailure("InvalidSource", "the replica's source names no hf, url or path");
  }

  /** sha256 digests of complete files in the cache (their names), for the node annotation. */
  async digests(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => /^[a-f0-9]{64}\.gguf$/.test(n)).map((n) => n.slice(0, 64));
  }

  private async useLocal(path: string, sha256: string | undefined): Promise<CachedModel> {
    const info = await stat(path).catch(() => undefined);
    if (!info?.isFile()) throw new ReplicaFailure("FileNotFound", `the model file ${path} does not exist on this node`);
    if (sha256) {
      const actual = await hashFile(path);
      if (actual !== sha256)
        throw new ReplicaFailure(
          "ChecksumMismatch",
          `the file ${path} has sha256 ${actual}, not the expected ${sha256}`,
        );
    }
    return { path, sha256 };
  }

  private async download(url: string, sha256: string | undefined, options: FetchOptions): Promise<CachedModel> {
    const key = sha256 ?? createHash("sha256").update(url).digest("hex");
    const final = join(this.dir, sha256 ? `${sha256}.gguf` : `url-${key}.gguf`);
    if (await exists(final)) {
      await touch(final);
      return { path: final, sha256 };
    }
    const part = `${final}.part`;
    const done = (await stat(part).catch(() => undefined))?.size ?? 0;
    const response = await fetchModelSource(url, this.sources, {
      headers: done > 0 ? { range: `bytes=${done}-` } : {},
      signal: options.signal,
    }).catch((err: unknown) => {
      if (err instanceof ModelSourceError) throw new ReplicaFailure(err.reason, err.message);
      if (options.signal?.aborted) throw err;
      throw new ReplicaFailure("DownloadFailed", `cannot download ${redactUrl(url)}: ${(err as Error).message}`);
    });
    const failed = (failure: ReplicaFailure) => {
      response.body.destroy();
      return failure;
    };
    if (response.status === 404)
      throw failed(new ReplicaFailure("FileNotFound", `${redactUrl(url)} answered 404 Not Found`));
    if (response.status !== 200 && response.status !== 206)
      throw failed(new ReplicaFailure("DownloadFailed", `${redactUrl(url)} answered ${response.status}`));
    // A server that ignores Range sends the whole file again: start over rather than append it twice.
    const resumed = response.status === 206 && done > 0;
    const length = Number(response.headers["content-length"] ?? Number.NaN);
    const bytesTotal = Number.isFinite(length) ? length + (resumed ? done : 0) : undefined;
    await this.makeRoom(bytesTotal ?? 0).catch((err: unknown) => {
      throw failed(err as ReplicaFailure);
    });
    let bytesDone = resumed ? done : 0;
    let lastReport = 0;
    const body = response.body;
    body.on("data", (chunk: Buffer) => {
      bytesDone += chunk.length;
      const now = Date.now();
      // Status writes are for people watching; one every two seconds is plenty and spares the API server.
      if (now - lastReport >= 2000) {
        lastReport = now;
        options.onProgress?.({ bytesDone, bytesTotal });
      }
    });
    await pipeline(body, createWriteStream(part, { flags: resumed ? "a" : "w" }), { signal: options.signal }).catch(
      (err: NodeJS.ErrnoException) => {
        // The partial file stays: it holds good bytes, and the next attempt resumes from it once there is room.
        if (err.code === "ENOSPC")
          throw new ReplicaFailure(
            "CacheDiskFull",
            `the disk of the model cache ${this.dir} is full after ${bytesDone} bytes of ${redactUrl(url)}`,
          );
        if (options.signal?.aborted) throw err;
        if (err instanceof ModelSourceError) throw new ReplicaFailure(err.reason, err.message);
        throw new ReplicaFailure("DownloadFailed", `downloading ${redactUrl(url)} failed: ${err.message}`);
      },
    );
    options.onProgress?.({ bytesDone, bytesTotal });
    if (sha256) {
      const actual = await hashFile(part);
      if (actual !== sha256) {
        await rm(part, { force: true });
        throw new ReplicaFailure(
          "ChecksumMismatch",
          `the file from ${redactUrl(url)} has sha256 ${actual}, not the expected ${sha256}`,
        );
      }
    }
    await rename(part, final);
    return { path: final, sha256 };
  }

  /** hf:owner/repo:quant needs the Hub's API to pick the file, which node-llama-cpp knows. */
  private async resolveHf(reference: string, sha256: string | undefined, options: FetchOptions): Promise<CachedModel> {
    let path: string;
    try {
      path = await resolveModelFile(reference, {
        directory: this.dir,
        cli: false,
        signal: options.signal,
        onProgress: ({ downloadedSize, totalSize }) =>
          options.onProgress?.({ bytesDone: downloadedSize, bytesTotal: totalSize }),
      });
    } catch (err) {
      throw new ReplicaFailure("DownloadFailed", `cannot fetch ${reference}: ${(err as Error).message}`);
    }
    if (sha256) {
      const actual = await hashFile(path);
      if (actual !== sha256)
        throw new ReplicaFailure("ChecksumMismatch", `${reference} has sha256 ${actual}, not the expected ${sha256}`);
    }
    return { path, sha256 };
  }

  /** Evict least recently used, unpinned files until `incoming` more bytes fit under the limit. */
  private async makeRoom(incoming: number): Promise<void> {
    const limit = this.maxBytes ?? Number.POSITIVE_INFINITY;
    if (incoming > limit)
      throw new ReplicaFailure("CacheTooSmall", `the file needs ${incoming} bytes but the cache holds ${limit}`);
    const names = await readdir(this.dir);
    const files = await Promise.all(
      names
        .filter((n) => n.endsWith(".gguf"))
        .map(async (n) => {
          const path = join(this.dir, n);
          const s = await stat(path);
          return { path, size: s.size, used: s.mtimeMs };
        }),
    );
    let used = files.reduce((sum, f) => sum + f.size, 0);
    for (const f of files.sort((a, b) => a.used - b.used)) {
      if (used + incoming <= limit) break;
      if (this.pinned.has(f.path)) continue;
      await rm(f.path, { force: true });
      used -= f.size;
    }
  }
}

export async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}

async function touch(path: string): Promise<void> {
  const now = new Date();
  await utimes(path, now, now).catch(() => {});
}
