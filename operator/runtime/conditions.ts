import type { Condition } from "../../crds/api/index.ts";

export interface ConditionInput {
  type: string;
  status: "True" | "False" | "Unknown";
  /** CamelCase, a constant per cause. */
  reason: string;
  /** A sentence a user can act on. */
  message: string;
}

/**
 * Set one condition in a list, as metav1.Condition semantics want:
 * lastTransitionTime moves only when the status changes.
 */
export function setCondition(
  existing: Condition[] | undefined,
  input: ConditionInput,
  observedGeneration: number | undefined,
  now = new Date(),
): Condition[] {
  const list = [...(existing ?? [])];
  const i = list.findIndex((c) => c.type === input.type);
  const previous = i >= 0 ? list[i] : undefined;
  const next = {
    ...input,
    observedGeneration: observedGeneration ?? 0,
    lastTransitionTime:
      previous && previous.status === input.status
        ? previous.lastTransitionTime
        : now.toISOString().replace(/\.\d+Z$/, "Z"),
  } as Condition;
  if (i >= 0) list[i] = next;
  else list.push(next);
  return list;
}
