/**
 * Leader election on a coordination.k8s.io Lease: acquire when it is free or
 * expired, renew every `renewMs`, and report loss the moment another holder is
 * seen, or when renewals have failed for the renew deadline (two thirds of the
 * lease, as client-go's defaults): a short API server outage is ridden out,
 * and leadership is given up well before anyone else could take the lease.
 */
import type { KubeConfig, V1Lease } from "@kubernetes/client-node";
// Not the package's index, which loads every generated API (kube/rest.ts).
import { V1MicroTime } from "@kubernetes/client-node/dist/types.js";
import { KubeRest } from "../../kube/rest.ts";
import type { Logger } from "./log.ts";

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds: number;
  renewMs: number;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

export class LeaderElector {
  private readonly api: KubeRest;
  private readonly options: LeaderOptions;
  private readonly log: Logger;
  private leading = false;
  private lastRenewed = 0;
  private timer: NodeJS.Timeout | undefined;
  /** The renewal in flight: stop() waits for it, or its write could undo the release. */
  private ticking: Promise<void> | undefined;
  private stopped = false;

  constructor(kubeConfig: KubeConfig, options: LeaderOptions, log: Logger) {
    this.api = new KubeRest(kubeConfig);
    this.options = options;
    this.log = log;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.ticking = this.tick();
  }

  /**
   * Stop renewing and, with `release`, give the lease up so a standby takes over without waiting for
   * expiry. Without it the lease runs out on its own (for when work of this leader may still be under way).
   */
  async stop(release = true): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.ticking;
    if (!this.leading || !release) return;
    this.leading = false;
    try {
      const lease = await this.api.get<V1Lease>(this.leasePath());
      if (lease.spec?.holderIdentity === this.options.identity) {
        lease.spec = {
          leaseDurationSeconds: 1,
          renewTime: new V1MicroTime(0),
          leaseTransitions: lease.spec.leaseTransitions,
        };
        await this.api.replace(this.leasePath(), lease);
      }
    } catch (err) {
      // The lease expires on its own.
      this.log.warn("cannot give the leader lease up; it expires on its own", { error: (err as Error).message });
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    let holding = false;
    try {
      holding = await this.tryAcquireOrRenew();
      if (holding) this.lastRenewed = Date.now();
    } catch (err) {
      const renewDeadlineMs = (this.options.leaseDurationSeconds * 1000 * 2) / 3;
      holding = this.leading && Date.now() - this.lastRenewed < renewDeadlineMs;
      this.log.warn("leader lease update failed", { error: (err as Error).message, stillLeading: holding });
    }
    if (holding && !this.leading) {
      this.leading = true;
      this.log.info("became leader", { identity: this.options.identity });
      this.options.onStartedLeading();
    } else if (!holding && this.leading) {
      this.leading = false;
      this.log.warn("lost leadership", { identity: this.options.identity });
      this.options.onStoppedLeading();
    }
    if (!this.stopped)
      this.timer = setTimeout(() => {
        this.ticking = this.tick();
      }, this.options.renewMs);
  }

  private leasePath(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.options.namespace}/leases/${this.options.name}`;
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity, leaseDurationSeconds } = this.options;
    // Lease times are MicroTime: the API server refuses milliseconds.
    const now = new V1MicroTime();
    let lease: V1Lease | undefined;
    try {
      lease = await this.api.get<V1Lease>(this.leasePath());
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
    }
    if (!lease) {
      await this.api.create(`/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`, {
        metadata: { name, namespace },
        spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
      });
      return true;
    }
    const spec = lease.spec ?? {};
    const renewed = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
    const expired = renewed + (spec.leaseDurationSeconds ?? leaseDurationSeconds) * 1000 < now.getTime();
    const mine = spec.holderIdentity === identity;
    if (!mine && spec.holderIdentity && !expired) return false;
    lease.spec = {
      ...spec,
      ...(spec.acquireTime ? { acquireTime: new V1MicroTime(spec.acquireTime) } : {}),
      holderIdentity: identity,
      leaseDurationSeconds,
      renewTime: now,
      ...(mine ? {} : { acquireTime: now, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }),
    };
    // replace carries resourceVersion, so two contenders cannot both win the same expired lease.
    await this.api.replace(this.leasePath(), lease);
    return true;
  }
}
