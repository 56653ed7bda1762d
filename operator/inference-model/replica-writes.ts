/**
 * Creates and deletes ModelReplicas, keeping the replica index's expectations
 * (replica-index.ts) in step with what was sent: a create is assumed until the
 * cache shows it, a delete hides the replica until the cache shows it gone, and
 * a write that fails undoes its expectation, so the next pass sees the replica
 * as it really is and tries again.
 */
import type { ModelReplica } from "../../crds/api/index.ts";
import { objectKey } from "../../kube/list-watch.ts";
import type { ReplicaIndex } from "./replica-index.ts";

/** The API calls; a 404 from `delete` must come as an error with `code: 404`. */
export interface ReplicaApi {
  create(replica: ModelReplica): Promise<void>;
  delete(replica: ModelReplica): Promise<void>;
}

export function replicaWrites(index: ReplicaIndex, api: ReplicaApi) {
  return {
    /** Note the plan's writes in the index before anything awaits, so no other pass plans on stale state. */
    expect(plan: { create: readonly ModelReplica[]; delete: readonly ModelReplica[] }, now: number): void {
      for (const r of plan.create) index.assume(r, now);
      for (const r of plan.delete) index.deleteSent(objectKey(r), now);
    },

    async create(replica: ModelReplica): Promise<void> {
      try {
        await api.create(replica);
      } catch (err) {
        // Not created: it and its memory count no more.
        index.unassume(objectKey(replica));
        throw err;
      }
    },

    async delete(replica: ModelReplica): Promise<void> {
      try {
        await api.delete(replica);
      } catch (err) {
        if ((err as { code?: number }).code === 404) return;
        // Not deleted: it counts again, so the next pass deletes it again.
        index.deleteFailed(objectKey(replica));
        throw err;
      }
    },
  };
}
