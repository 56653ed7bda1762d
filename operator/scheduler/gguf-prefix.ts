/**
 * Reads the first bytes of a remote file into a local file, growing the prefix until a parser succeeds:
 * GGUF headers (metadata, vocabulary, tensor infos) range from kilobytes to tens of megabytes.
 */
import { createWriteStream } from "node:fs";
import type { ModelResponse } from "../../model-source/guarded-fetch.ts";

const PREFIX_SIZES = [4 * 2 ** 20, 32 * 2 ** 20, 128 * 2 ** 20];

export async function readHeaderPrefix<T>(
  fetchPrefix: (bytes: number) => Promise<ModelResponse>,
  file: string,
  parse: (path: string) => Promise<T>,
): Promise<T> {
  let lastError: unknown;
  for (const size of PREFIX_SIZES) {
    const response = await fetchPrefix(size);
    if (response.status !== 200 && response.status !== 206) {
      response.body.destroy();
      throw new Error(`the server answered ${response.status}`);
    }
    const written = await writePrefix(response, file, size);
    try {
      return await parse(file);
    } catch (err) {
      lastError = err;
      // The whole file fit in the prefix: a longer one would not help.
      if (written < size) break;
    }
  }
  throw lastError;
}

/** At most `size` bytes of the body into the file (a server that ignores Range sends more: it is cut). */
function writePrefix(response: ModelResponse, file: string, size: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(file);
    let written = 0;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      response.body.destroy();
      out.end(() => resolve(written));
    };
    response.body.on("data", (chunk: Buffer) => {
      if (done) return;
      const part = chunk.subarray(0, size - written);
      written += part.length;
      if (written >= size) {
        out.write(part);
        finish();
      } else if (!out.write(part)) {
        response.body.pause();
        out.once("drain", () => response.body.resume());
      }
    });
    response.body.on("end", finish);
    response.body.on("error", (err) => {
      if (done) return;
      done = true;
      out.destroy();
      reject(err);
    });
    out.on("error", reject);
  });
}
