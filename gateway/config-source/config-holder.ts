/**
 * Holds the route table in use and swaps it atomically. A request reads the
 * table once and keeps that reference, so it finishes on the config it
 * started with. Versions only go up.
 */
import type { GatewayConfig } from "../../crds/api/index.ts";
import { RouteTable } from "./route-table.ts";

export type OfferResult = "applied" | "stale";

export class ConfigHolder {
  private table: RouteTable | undefined;
  private readonly listeners: ((table: RouteTable) => void)[] = [];

  get current(): RouteTable | undefined {
    return this.table;
  }

  get version(): number {
    return this.table?.version ?? 0;
  }

  /** Offer a whole decoded config; one not newer than the current is ignored. */
  offer(config: GatewayConfig): OfferResult {
    if (config.version <= this.version) return "stale";
    return this.install(RouteTable.fromConfig(config));
  }

  /** Offer a table built from the one in use (config-assembler.ts); one not newer than the current is ignored. */
  install(table: RouteTable): OfferResult {
    if (table.version <= this.version) return "stale";
    this.table = table;
    for (const listener of this.listeners) listener(table);
    return "applied";
  }

  onChange(listener: (table: RouteTable) => void): void {
    this.listeners.push(listener);
  }
}
