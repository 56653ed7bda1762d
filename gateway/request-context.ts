/** What the gateway learns about a request as it goes, declared up front so every request has one shape. */
import type { ResolvedKey, RouteTable } from "./config-source/route-table.ts";

declare module "fastify" {
  interface FastifyRequest {
    /** The config this request runs on from start to end, even if a newer one arrives meanwhile. */
    routeTable: RouteTable | null;
    caller: ResolvedKey | null;
    /** The model the client asked for, resolved to its name (never raw client text, so metrics stay bounded), and the model that answered (differs after a fallback). */
    requestedModel: string | null;
    answeredModel: string | null;
  }
}

export const requestDecorations = ["routeTable", "caller", "requestedModel", "answeredModel"] as const;
