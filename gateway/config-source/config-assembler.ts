/**
 * Builds the next route table from the one in use and a newly published core
 * part: buckets whose sha256 the core still lists are taken over as they are,
 * only the others are decoded (in the worker) and built, one at a time with a
 * turn of the event loop between them, so requests are never held up for more
 * than one bucket's worth of work (about 1,600 keys at 100,000); the model
 * lookups are built again only when models or policies changed. A start or a
 * resync after missed changes is the same path with more buckets to build.
 * Nothing is swapped until the whole table is ready: requests see the old
 * table or the new one, never a mix.
 */
import { ConfigNotReadyError, type CorePart, type GatewayKey, partSha256 } from "../../crds/api/index.ts";
import { nextTurn } from "./next-turn.ts";
import { buildKeyBucket, type KeyBucket, RouteTable } from "./route-table.ts";

export interface PartDecoder {
  decodeBucket(bucket: number, bytes: Uint8Array): Promise<GatewayKey[]>;
}

/** Indexes of the buckets the table in use does not already hold as the core lists them. */
export function bucketsToRead(current: RouteTable | undefined, core: CorePart): number[] {
  const wanted: number[] = [];
  core.buckets.forEach((sha, i) => {
    if (current?.buckets[i]?.sha256 !== sha) wanted.push(i);
  });
  return wanted;
}

/**
 * The table for `core`, given the bytes read for the buckets `bucketsToRead` named.
 * ConfigNotReadyError when a bucket's bytes are missing or were written for another
 * version (read again shortly); the decoder's InvalidConfigError when a part is malformed.
 */
export async function assembleRouteTable(
  current: RouteTable | undefined,
  core: CorePart,
  read: ReadonlyMap<number, Uint8Array | undefined>,
  decoder: PartDecoder,
): Promise<{ table: RouteTable; rebuilt: number }> {
  const buckets: (KeyBucket | undefined)[] = core.buckets.map((sha, i) =>
    current?.buckets[i]?.sha256 === sha ? current.buckets[i] : undefined,
  );
  const toBuild: [number, Uint8Array][] = [];
  for (const [i, expected] of core.buckets.entries()) {
    if (buckets[i]) continue;
    const bytes = read.get(i);
    // Checked for every bucket before any is decoded: a core whose buckets are not all written yet costs nothing.
    if (!bytes || partSha256(bytes) !== expected) {
      throw new ConfigNotReadyError(`key bucket ${i} does not match config version ${core.version} yet`);
    }
    toBuild.push([i, bytes]);
    // A start checks every bucket: about 5 MiB to hash at 100,000 keys, too long for one slice.
    await nextTurn();
  }
  for (const [i, bytes] of toBuild) {
    const keys = await decoder.decodeBucket(i, bytes);
    await nextTurn();
    buckets[i] = buildKeyBucket(core.buckets[i] ?? "", keys);
  }
  await nextTurn();
  return { table: new RouteTable(core, buckets as KeyBucket[], current), rebuilt: toBuild.length };
}
