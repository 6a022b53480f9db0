// Leader election on a coordination.k8s.io Lease, as client-go's leaderelection:
// acquire when the Lease is free or its holder let it expire, renew every
// retryPeriod, and give up (onStoppedLeading → the process exits, as
// controller-runtime does) when it could not renew within the lease duration.
// Every write carries the resourceVersion it read, so two candidates racing
// for the same expired Lease cannot both win: the API server refuses one.
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface LeaderElectionOptions {
  kc: k8s.KubeConfig;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  retryPeriodMs?: number;
  log: Logger;
  now?: () => Date;
}

export type LeaseView = { holder: string | undefined; renewTime: Date | undefined; durationSeconds: number };

/** Whether `identity` may take the Lease now (pure). */
export function mayAcquire(lease: LeaseView, identity: string, now: Date): boolean {
  if (!lease.holder || lease.holder === identity) return true;
  if (!lease.renewTime) return true;
  return now.getTime() > lease.renewTime.getTime() + lease.durationSeconds * 1000;
}

export class LeaderElector {
  readonly #o: Required<Omit<LeaderElectionOptions, 'kc'>>;
  readonly #api: k8s.CoordinationV1Api;
  #leading = false;
  #stopped = false;
  #renewing = true;
  #timer: NodeJS.Timeout | undefined;
  /** The renewal under way, if any: handing the Lease back waits for it (else its write could land after ours). */
  #inFlight: Promise<boolean> | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #lastRenew = 0;

  constructor(o: LeaderElectionOptions) {
    this.#o = { leaseDurationSeconds: 15, retryPeriodMs: 2000, now: () => new Date(), ...o };
    this.#api = o.kc.makeApiClient(k8s.CoordinationV1Api);
  }

  get leading(): boolean {
    return this.#leading;
  }

  /**
   * Resolves once this process leads; calls onStoppedLeading (once) if it loses the Lease
   * later. Leadership counts from when a successful renewal *started* (the renewTime it
   * wrote, from which the others count the Lease's expiry), and a watchdog ends it when
   * no renewal succeeded within the deadline even while a request hangs: with pooled
   * connections a request on a connection that died silently can hang for minutes, and
   * a leader that waited for it would act on past its Lease while a standby leads.
   */
  run(onStoppedLeading: () => void): Promise<void> {
    const deadlineMs = (this.#o.leaseDurationSeconds * 1000 * 2) / 3;
    return new Promise((resolve) => {
      const stepDown = (): void => {
        if (this.#stopped) return;
        this.#stopped = true;
        this.#leading = false;
        clearTimeout(this.#timer);
        clearInterval(this.#watchdog);
        this.#o.log.error({ identity: this.#o.identity }, 'Lost leadership');
        onStoppedLeading();
      };
      const tick = async (): Promise<void> => {
        if (this.#stopped || !this.#renewing) return;
        const started = this.#o.now().getTime();
        const attempt = this.#tryAcquireOrRenew().catch((err: unknown) => {
          this.#o.log.warn({ err }, 'Lease update failed');
          return false;
        });
        this.#inFlight = attempt;
        const ok = await attempt;
        if (this.#stopped) return;
        if (ok) {
          this.#lastRenew = started;
          if (!this.#leading) {
            this.#leading = true;
            this.#o.log.info(
              { lease: `${this.#o.namespace}/${this.#o.name}`, identity: this.#o.identity },
              'Became leader',
            );
            resolve();
          }
        }
        if (this.#leading && this.#o.now().getTime() - this.#lastRenew > deadlineMs) return stepDown();
        if (!this.#renewing) return;
        this.#timer = setTimeout(() => void tick(), this.#o.retryPeriodMs);
      };
      this.#watchdog = setInterval(
        () => {
          if (this.#leading && this.#o.now().getTime() - this.#lastRenew > deadlineMs) stepDown();
        },
        Math.min(this.#o.retryPeriodMs, 1000),
      );
      this.#watchdog.unref();
      void tick();
    });
  }

  async #tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity, leaseDurationSeconds } = this.#o;
    const now = this.#o.now();
    const micro = new k8s.V1MicroTime(now.getTime());
    let lease: k8s.V1Lease;
    try {
      lease = await this.#api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!(err instanceof k8s.ApiException && err.code === 404)) throw err;
      await this.#api.createNamespacedLease({
        namespace,
        body: {
          metadata: { name, namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds,
            acquireTime: micro,
            renewTime: micro,
            leaseTransitions: 0,
          },
        },
      });
      return true;
    }
    const spec = lease.spec ?? {};
    const view: LeaseView = {
      holder: spec.holderIdentity ?? undefined,
      renewTime: spec.renewTime ? new Date(spec.renewTime) : undefined,
      durationSeconds: spec.leaseDurationSeconds ?? leaseDurationSeconds,
    };
    if (!mayAcquire(view, identity, now)) return false;
    const taking = view.holder !== identity;
    lease.spec = {
      ...spec,
      holderIdentity: identity,
      leaseDurationSeconds,
      renewTime: micro,
      ...(taking ? { acquireTime: micro, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
    };
    // replace carries metadata.resourceVersion: a concurrent writer makes this a 409.
    await this.#api.replaceNamespacedLease({ name, namespace, body: lease });
    return true;
  }

  /**
   * Shutting down: renew no more. The Lease stays this process's until it expires (the
   * others count from its last renewal) or release() hands it back; leadership still ends
   * by the deadline. A process that kept renewing while its workers wound down would hold
   * the Lease for as long as they took, and the standby would wait that long plus the
   * Lease's duration if the process then died before handing it back.
   */
  stopRenewing(): void {
    this.#renewing = false;
    clearTimeout(this.#timer);
  }

  /**
   * Stops renewing and hands the Lease back so a standby takes over at once. Call it only
   * when nothing of this process acts any more. Gives up after `timeoutMs` (a request on a
   * dead connection can hang for minutes): the Lease then expires by itself.
   */
  async release(timeoutMs = 3_000): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearInterval(this.#watchdog);
    if (!this.#leading) return;
    this.#leading = false;
    const { name, namespace } = this.#o;
    const handBack = async (): Promise<void> => {
      // A renewal that started before stopRenewing() and lands after this read would make
      // our write a conflict (409) and leave the Lease held until it expires.
      await this.#inFlight;
      const lease = await this.#api.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== this.#o.identity) return;
      lease.spec = { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 };
      // replace carries the resourceVersion read: a renewal still in flight makes this a 409.
      await this.#api.replaceNamespacedLease({ name, namespace, body: lease });
      this.#o.log.info({ lease: `${namespace}/${name}` }, 'Handed the Lease back');
    };
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([handBack(), timedOut]);
    } catch (err) {
      this.#o.log.warn({ err }, 'Could not hand the Lease back; it expires by itself');
    } finally {
      clearTimeout(timer);
    }
  }
}
