/**
 * Finds lost nodes from watch events rather than by scanning. A node is lost when its Node is gone, or
 * when its Lease in kube-node-lease has not been renewed for the Lease's duration plus the grace
 * period (a Node that never got a Lease: for the grace since its creation). A node that stops renewing sends no event, so each node has one timer, set for the moment
 * the grace runs out and moved by every renewal; it fires only for a node that really stopped. Each
 * node's entry goes when both its Node and its Lease are gone, so nothing grows with nodes that left.
 */
import type { V1Lease, V1Node } from "@kubernetes/client-node";
import type { Informer } from "../runtime/informer.ts";
import type { Runnable } from "../runtime/manager.ts";
import { nodeLeaseNamespace, nodeOverdueMs } from "./node-view.ts";

export interface NodeLossOptions {
  nodes: Informer<V1Node>;
  leases: Informer<V1Lease>;
  /** How long past its Lease's expiry a node may stay silent before it is lost. */
  graceMs: number;
  /** Names of nodes replicas are bound to, so a node deleted while nobody watched is still found lost. */
  boundNodes: () => Iterable<string>;
  onLost: (node: string) => void;
  onBack?: (node: string) => void;
}

interface NodeState {
  timer?: NodeJS.Timeout;
  /** When the timer fires (ms since the epoch). */
  due?: number;
  lost: boolean;
}

export class NodeLossTracker implements Runnable {
  private readonly options: NodeLossOptions;
  private readonly states = new Map<string, NodeState>();
  private running = false;

  constructor(options: NodeLossOptions) {
    this.options = options;
    // Registered at once, acted on only while running: the informers may deliver before start().
    options.leases.onChange((lease) => {
      if (lease.metadata?.namespace === nodeLeaseNamespace) this.check(lease.metadata?.name ?? "");
    });
    options.nodes.onChange((node) => this.check(node.metadata?.name ?? ""));
  }

  /** Look at every known node once (the caches have synced), then follow events. */
  start(): void {
    this.running = true;
    const names = new Set<string>(this.options.boundNodes());
    for (const n of this.options.nodes.list()) names.add(n.metadata?.name ?? "");
    for (const l of this.options.leases.list(nodeLeaseNamespace)) names.add(l.metadata?.name ?? "");
    for (const name of names) this.check(name);
  }

  stop(): void {
    this.running = false;
    for (const state of this.states.values()) if (state.timer) clearTimeout(state.timer);
    this.states.clear();
  }

  /** Whether anything is kept for the node (its Node or its Lease still exists). */
  tracks(node: string): boolean {
    return this.states.has(node);
  }

  /** When the node's timer fires, if it has one (for tests and logs). */
  dueAt(node: string): number | undefined {
    return this.states.get(node)?.due;
  }

  /** Decide from the caches what the node is now, and set its timer if it is still alive. */
  private check(name: string, now = Date.now()): void {
    if (!this.running || !name) return;
    const node = this.options.nodes.get(name);
    const lease = this.options.leases.get(name, nodeLeaseNamespace);
    let state = this.states.get(name);
    if (state?.timer) clearTimeout(state.timer);
    if (state) {
      state.timer = undefined;
      state.due = undefined;
    }
    const overdueMs = nodeOverdueMs(node, lease, this.options.graceMs, now);
    if (overdueMs > 0) {
      if (!state?.lost) this.options.onLost(name);
      if (!node && !lease) this.states.delete(name);
      else this.states.set(name, { lost: true });
      return;
    }
    if (!state) {
      state = { lost: false };
      this.states.set(name, state);
    } else if (state.lost) {
      state.lost = false;
      this.options.onBack?.(name);
    }
    // Lost is "more than the grace": fire just after, and check again then (a renewal may have moved it).
    const waitMs = -overdueMs + 1;
    state.due = now + waitMs;
    state.timer = setTimeout(() => this.check(name), waitMs);
    state.timer.unref();
  }
}
