// The controller without its process: caches (volumes, replicas, nodes, pools) whose
// changes enqueue volume keys, and the agents' Leases (read, never enqueuing: a renewal
// changes no decision, and a Lease that stops is found by the reconcile's own recheck), the work queue, and the workers that run the
// reconciler. main.ts builds it on the API server's informers behind leader
// election; the control-plane simulator (test/sim) builds it on simulated ones.
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { LABELS } from '../api/names.ts';
import { type Clock, systemClock } from '../runtime/clock.ts';
import type { CacheFactory, ObjectCache } from '../runtime/informer.ts';
import { WorkQueue } from '../runtime/work-queue.ts';
import { runWorkers, type WorkOutcome } from '../runtime/workers.ts';
import { nodeFingerprint, replicaFingerprint } from './change-filter.ts';
import type { ControllerMetrics } from './metrics.ts';
import { NODE_ACCESS_KEY, VolumeReconciler } from './reconciler.ts';
import type { VolumeApi } from './volume-api.ts';
import type { WorkloadApi } from './workload-api.ts';

export interface ControllerOptions {
  api: VolumeApi;
  /** Pods, claims and attachments: the lost node's workload is freed after a failover (none: never). */
  workload?: WorkloadApi;
  volumes: CacheFactory<k8s.KubernetesObject>;
  replicas: CacheFactory<k8s.KubernetesObject>;
  nodes: CacheFactory<k8s.V1Node>;
  /** StoragePools (cluster-scoped): placement resolves disks from them. */
  pools: CacheFactory<k8s.KubernetesObject>;
  /** The release namespace's Leases: the agents' liveness (tandem-agent-NODE). */
  leases: CacheFactory<k8s.KubernetesObject>;
  log: Logger;
  clock?: Clock;
  metrics?: ControllerMetrics;
}

const keyOf = (o: k8s.KubernetesObject) => `${o.metadata?.namespace}/${o.metadata?.name}`;

export class Controller {
  readonly queue: WorkQueue;
  readonly caches: {
    volumes: ObjectCache<k8s.KubernetesObject>;
    replicas: ObjectCache<k8s.KubernetesObject>;
    nodes: ObjectCache<k8s.V1Node>;
    pools: ObjectCache<k8s.KubernetesObject>;
    leases: ObjectCache<k8s.KubernetesObject>;
  };
  readonly reconciler: VolumeReconciler;
  readonly #o: ControllerOptions;
  #workers: Promise<void>[] = [];

  constructor(o: ControllerOptions) {
    this.#o = o;
    const clock = o.clock ?? systemClock;
    this.queue = new WorkQueue({ clock });
    const volumes = o.volumes({
      onChange: (v) => {
        this.queue.add(keyOf(v));
        // A volume gone may have been the last on a node that is gone too.
        if (!volumes.get(v.metadata?.name ?? '', v.metadata?.namespace)) this.queue.add(NODE_ACCESS_KEY);
      },
      onResync: () => {
        for (const v of volumes.list()) this.queue.add(keyOf(v));
      },
    });
    // Heartbeats change nothing a reconcile reads but the time (change-filter.ts): only a
    // replica or a Node whose fingerprint moved, or that left the cache, enqueues.
    const seen = new Map<string, string>();
    const changed = (key: string, print: string | undefined): boolean => {
      if (print === undefined) return seen.delete(key) || true;
      if (seen.get(key) === print) return false;
      seen.set(key, print);
      return true;
    };
    const replicas = o.replicas({
      onChange: (r) => {
        const name = r.metadata?.name ?? '';
        const gone = !replicas.get(name, r.metadata?.namespace);
        if (!changed(`replica:${r.metadata?.namespace}/${name}`, gone ? undefined : replicaFingerprint(r))) return;
        const v = r.metadata?.labels?.[LABELS.volume];
        if (v) this.queue.add(`${r.metadata?.namespace}/${v}`);
      },
    });
    const nodes = o.nodes({
      onChange: (n) => {
        const gone = !nodes.get(n.metadata?.name ?? '');
        if (!changed(`node:${n.metadata?.name}`, gone ? undefined : nodeFingerprint(n))) return;
        if (gone) this.queue.add(NODE_ACCESS_KEY);
        for (const v of volumes.list()) {
          const spec = (v as { spec?: { replicas?: { node?: string }[] } }).spec;
          if (spec?.replicas?.some((r) => r.node === n.metadata?.name)) this.queue.add(keyOf(v));
        }
      },
    });
    const pools = o.pools({
      onChange: (p) => {
        for (const v of volumes.list())
          if ((v as { spec?: { pool?: string } }).spec?.pool === p.metadata?.name) this.queue.add(keyOf(v));
      },
    });
    const leases = o.leases({ onChange: () => undefined });
    this.caches = { volumes, replicas, nodes, pools, leases };
    this.reconciler = new VolumeReconciler({
      api: o.api,
      log: o.log,
      clock,
      caches: this.caches,
      ...(o.workload ? { workload: o.workload } : {}),
      ...(o.metrics ? { metrics: o.metrics } : {}),
    });
  }

  get synced(): boolean {
    return Object.values(this.caches).every((c) => c.synced);
  }

  startCaches(): Promise<void> {
    return Promise.all(Object.values(this.caches).map((c) => c.start())).then(() => undefined);
  }

  /** Once this process leads: workers take keys, and every volume is looked at once. */
  startWorkers(count: number): void {
    const m = this.#o.metrics;
    this.#workers = runWorkers({
      queue: this.queue,
      count,
      log: this.#o.log,
      keyField: 'rv',
      handle: (key) => this.reconciler.reconcile(key),
      ...(m
        ? {
            time: () => m.reconcileSeconds.startTimer(),
            onOutcome: (result: WorkOutcome) => {
              m.reconciles.inc({ result });
              if (result !== 'success') m.reconcileErrors.inc();
            },
          }
        : {}),
    });
    for (const v of this.caches.volumes.list()) this.queue.add(keyOf(v));
    this.queue.add(NODE_ACCESS_KEY);
  }

  /** Stops taking keys and waits up to `graceMs` for the ones in hand: true when every worker ended. */
  async stopWorkers(graceMs: number, clock: Clock = this.#o.clock ?? systemClock): Promise<boolean> {
    this.queue.shutDown();
    return await Promise.race([
      Promise.all(this.#workers).then(() => true),
      new Promise<boolean>((r) => clock.setTimer(() => r(false), graceMs)),
    ]);
  }

  stopCaches(): Promise<void> {
    return Promise.all(Object.values(this.caches).map((c) => c.stop())).then(() => undefined);
  }
}
