/**
 * An informer's cached objects grouped by values computed from each (client-go's indexers), kept current
 * from the same events that change the cache. It answers "which objects map to this value" in the time
 * of the answer, not of the whole cache: a RateLimitPolicy named by 100,000 ApiKeys of its namespace should
 * not make every policy's pass read all of them.
 */
import type { KubernetesObject } from "@kubernetes/client-node";
import { type ListWatchEventType, objectKey } from "../../kube/list-watch.ts";

export class CacheIndex<T extends KubernetesObject> {
  /** value → object key → object. */
  private readonly groups = new Map<string, Map<string, T>>();
  /** object key → the values it was filed under, so a change or deletion unfiles it whatever the event carries. */
  private readonly filed = new Map<string, string[]>();

  private readonly valuesOf: (obj: T) => string[];

  constructor(valuesOf: (obj: T) => string[]) {
    this.valuesOf = valuesOf;
  }

  /** Follows one cache event (kube/list-watch.ts). */
  update(type: ListWatchEventType, obj: T): void {
    const key = objectKey(obj);
    for (const value of this.filed.get(key) ?? []) {
      const group = this.groups.get(value);
      group?.delete(key);
      if (group?.size === 0) this.groups.delete(value);
    }
    this.filed.delete(key);
    if (type === "deleted") return;
    const values = this.valuesOf(obj);
    if (values.length === 0) return;
    this.filed.set(key, values);
    for (const value of values) {
      const group = this.groups.get(value) ?? new Map<string, T>();
      group.set(key, obj);
      this.groups.set(value, group);
    }
  }

  get(value: string): T[] {
    return [...(this.groups.get(value)?.values() ?? [])];
  }
}
