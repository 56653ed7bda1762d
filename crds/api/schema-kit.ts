import { z } from "zod";
import { QUANTITY } from "./quantity.ts";

/**
 * A cross-field rule stated twice on purpose: as CEL, which the API server
 * enforces, and as a TypeScript check, which zod enforces for code that builds
 * objects without the API server. The admission corpus test proves both agree.
 */
export interface CrossFieldRule<T> {
  /** CEL evaluated by the API server with `self` bound to the object. */
  rule: string;
  /** The error a user sees from `kubectl apply` and from zod. */
  message: string;
  /** The same rule in TypeScript. */
  check: (value: T) => boolean;
  /** For transition rules (using oldSelf): there is nothing to check without the old object. */
  transition?: true;
}

/** Attach a description and CEL rules to a schema, with the zod twin of each rule. */
export function withRules<S extends z.ZodType>(
  schema: S,
  description: string,
  rules: CrossFieldRule<z.output<S>>[],
): S {
  const refined = schema.superRefine((value, ctx) => {
    for (const r of rules) {
      if (!r.transition && !r.check(value)) ctx.addIssue({ code: "custom", message: r.message });
    }
  }) as unknown as S;
  return refined.meta({
    description,
    "x-kubernetes-validations": rules.map(({ rule, message }) => ({ rule, message })),
  });
}

/** Kubernetes resource quantity, e.g. `512Mi` or `8Gi`. */
export const quantity = (description: string) =>
  z.string().regex(QUANTITY, "must be a quantity such as 512Mi or 8Gi").describe(description);

/** A DNS-1123 subdomain, the shape of most object names. */
export const objectName = (description: string) =>
  z
    .string()
    .min(1)
    .max(253)
    .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, "must be a lowercase DNS-1123 name")
    .describe(description);

/** A name clients put in the `model` field of a request. */
export const modelName = (description: string) =>
  z
    .string()
    .min(1)
    .max(128)
    .regex(
      /^[A-Za-z0-9][A-Za-z0-9._:/-]*$/,
      "must start with a letter or digit and use only letters, digits and . _ : / -",
    )
    .describe(description);

/** A list whose items are unique, which Kubernetes enforces as `x-kubernetes-list-type: set`. */
export const setOf = <T extends z.ZodType>(item: T, max: number, description: string) =>
  z
    .array(item)
    .max(max)
    .refine((items) => new Set(items).size === items.length, "must not repeat a value")
    .meta({ description, "x-kubernetes-list-type": "set" });

/** metav1.Condition, the shape every Pomona status uses. */
export const condition = z
  .object({
    type: z.string().max(316).describe("Kind of condition, e.g. Ready, Scheduled or Degraded."),
    status: z.enum(["True", "False", "Unknown"]).describe("Whether the condition holds: True, False or Unknown."),
    observedGeneration: z.int().min(0).optional().describe("The .metadata.generation the condition was computed from."),
    lastTransitionTime: z.iso.datetime({ offset: true }).describe("When the status last changed."),
    reason: z.string().max(1024).describe("A CamelCase word for why the condition is in this state."),
    message: z.string().max(32768).describe("A sentence a user can act on."),
  })
  .describe("One aspect of the object's state, in the shape of metav1.Condition.");

export const conditions = z
  .array(condition)
  .max(16)
  .optional()
  .meta({
    description: "The latest observations of the object's state.",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
  });

export type Condition = z.infer<typeof condition>;
