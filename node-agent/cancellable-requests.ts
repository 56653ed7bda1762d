/**
 * The running requests the gateway may cancel by the id it gave them (crds/api nodeCancel): cancelling aborts
 * the request's generation as a closed connection would, but the connection stays open for the next call.
 * Bounded: past the limit a request is simply not cancellable by id, and the gateway's fallback (closing the
 * connection) still stops it.
 */
import { nodeCancel } from "../crds/api/index.ts";

/** Far above what a node runs at once (sequences plus queue, over all replicas). */
const DEFAULT_LIMIT = 4096;

export class CancellableRequests {
  private readonly byId = new Map<string, AbortController>();
  private readonly limit: number;

  constructor(limit = DEFAULT_LIMIT) {
    this.limit = limit;
  }

  /**
   * Lets `id` abort `controller` until the returned function is called (when the request is over). An id
   * that is absent, malformed, already in use or over the limit is not registered.
   */
  add(id: string | string[] | undefined, controller: AbortController): () => void {
    if (typeof id !== "string" || !nodeCancel.idPattern.test(id) || this.byId.has(id) || this.byId.size >= this.limit)
      return () => {};
    this.byId.set(id, controller);
    return () => {
      if (this.byId.get(id) === controller) this.byId.delete(id);
    };
  }

  /** Aborts the request with this id; false when no running request has it (it may have just ended). */
  cancel(id: string): boolean {
    const controller = this.byId.get(id);
    if (!controller) return false;
    this.byId.delete(id);
    controller.abort(new Error("the gateway cancelled the request"));
    return true;
  }
}
