// An inference node as the scheduler sees it, for the tests of the operator's pure decisions.
import { inferenceNodeTaint, labels } from "../../crds/api/index.ts";
import type { NodeView } from "../../operator/scheduler/schedule.ts";

/** Ready with a fresh Lease, Pomona's label and taint, `gib` GiB of model memory and no model cached. */
export const nodeView = (name: string, gib = 8, extra: Partial<NodeView> = {}): NodeView => ({
  name,
  labels: { [labels.inferenceNode]: "true" },
  taints: [{ ...inferenceNodeTaint }],
  ready: true,
  leaseFresh: true,
  modelMemoryBytes: gib * 2 ** 30,
  cachedModels: [],
  ...extra,
});
