/** The replica a node-agent route names: the ModelReplica's namespace and name. */
import { z } from "zod";

export const replicaParams = z.object({
  namespace: z.string().min(1).max(253),
  name: z.string().min(1).max(253),
});
