// Reconcile one ReplicatedVolume. Level-based: read the world from the caches,
// decide with pure functions (decisions/), act, write status once. The spine:
//
//   finalizer → placement → port + peer Secret → roles → replicas → status
//
// Deletion: replicas are told engine=Down (demote, `down`, wipe nothing); once
// every reachable agent reports its engine gone, the finalizer is removed and
// the garbage collector takes the replicas and the Secret (owner references).
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ANNOTATIONS, FINALIZER, LABELS, PORT_RANGE } from '../api/names.ts';
import { ReplicatedVolume, type ReplicatedVolumeStatus } from '../api/replicated-volume.ts';
import { ReplicatedVolumeReplica } from '../api/replicated-volume-replica.ts';
import { canonicalJson } from '../runtime/canonical-json.ts';
import { type Clock, systemClock } from '../runtime/clock.ts';
import { TerminalError } from '../runtime/errors.ts';
import { allocatePort, decidePlacement, type NodeView, type Placement } from './decisions/placement.ts';
import { decideEngineState, desiredReplicaSpecs } from './decisions/replicas.ts';
import { decideRoles, type RolesDecision } from './decisions/roles.ts';
import { aggregateStatus, eventsBetween, sameStatus } from './decisions/status.ts';
import type { ControllerMetrics } from './metrics.ts';
import type { VolumeApi } from './volume-api.ts';

export interface Caches {
  volumes: {
    list(): readonly k8s.KubernetesObject[];
    get(name: string, namespace?: string): k8s.KubernetesObject | undefined;
  };
  replicas: { list(namespace?: string): readonly k8s.KubernetesObject[] };
  nodes: { list(): readonly k8s.V1Node[] };
}

export type ReconcileResult = { requeueAfterMs?: number };

export function nodeView(n: k8s.V1Node): NodeView {
  const ready = n.status?.conditions?.find((c) => c.type === 'Ready');
  return {
    name: n.metadata?.name ?? '',
    ready: ready?.status === 'True',
    readySince: ready?.lastTransitionTime ? new Date(ready.lastTransitionTime) : undefined,
    unschedulable: n.spec?.unschedulable === true,
    internalIP: n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
  };
}

/** What the reconciler reports to metrics; the simulator passes none. */
export type ReconcilerMetrics = Pick<ControllerMetrics, 'observe'> & { failovers: { inc(l: object): void } };

export class VolumeReconciler {
  readonly #api: VolumeApi;
  readonly #caches: Caches;
  readonly #log: Logger;
  readonly #metrics: ReconcilerMetrics | undefined;
  readonly #clock: Clock;
  /** Ports handed out but maybe not yet seen in the cache (several workers). */
  readonly #reservedPorts = new Map<number, string>();

  constructor(o: { api: VolumeApi; caches: Caches; log: Logger; metrics?: ReconcilerMetrics; clock?: Clock }) {
    this.#api = o.api;
    this.#caches = o.caches;
    this.#log = o.log;
    this.#metrics = o.metrics;
    this.#clock = o.clock ?? systemClock;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const [namespace, name] = key.split('/') as [string, string];
    const raw = this.#caches.volumes.get(name, namespace);
    if (!raw) {
      this.#metrics?.observe(namespace, name, undefined);
      return {};
    }
    const parsed = ReplicatedVolume.safeParse(raw);
    if (!parsed.success) throw new TerminalError('InvalidSpec', `${key}: ${parsed.error.message}`);
    let rv = parsed.data;
    const log = this.#log.child({ rv: key });
    const now = this.#clock.now();
    const nodes = new Map(this.#caches.nodes.list().map((n) => [n.metadata?.name ?? '', nodeView(n)]));
    const replicas = this.#replicasOf(rv);
    const deleting = rv.metadata.deletionTimestamp !== undefined;

    if (deleting && !rv.metadata.finalizers?.includes(FINALIZER)) return {};
    if (!deleting) rv = await this.#ensureFinalizer(rv, log);

    const placement = decidePlacement(rv.spec.replicas, nodes, replicas.size > 0);
    let roles: RolesDecision | undefined;
    let port: number | undefined = Number(rv.metadata.annotations?.[ANNOTATIONS.port]) || undefined;
    if (placement.ok && !deleting) {
      ({ rv, port } = await this.#ensurePort(rv, port, log));
      await this.#ensureSecret(rv, log);
    }
    if (placement.ok && port !== undefined) {
      const forcePrimary = rv.metadata.annotations?.[ANNOTATIONS.forcePrimary];
      roles = decideRoles({
        nodes: [rv.spec.replicas[0]!.node, rv.spec.replicas[1]!.node],
        preferred: rv.spec.primary,
        chosen: rv.status?.primary,
        epoch: rv.status?.epoch ?? 0,
        fence: rv.status?.fence,
        failover: rv.spec.failover,
        health: Object.fromEntries(
          rv.spec.replicas.map((r) => {
            const n = nodes.get(r.node);
            return [r.node, n ? { ready: n.ready, since: n.readySince } : undefined];
          }),
        ),
        forcePrimary: deleting ? undefined : forcePrimary,
        now,
        observed: rv.spec.replicas.map((r) => {
          const have = replicas.get(r.node);
          return {
            node: r.node,
            ...have?.status,
            ...(have
              ? {
                  ordered: { role: have.spec.role, initialSync: have.spec.initialSync },
                  stale: (have.status?.observedGeneration ?? -1) < (have.metadata.generation ?? 0),
                }
              : {}),
          };
        }),
      });
    }

    const status = aggregateStatus({
      generation: rv.metadata.generation ?? 0,
      previous: rv.status,
      nodes: rv.spec.replicas.map((r) => r.node),
      replicas: new Map(
        [...replicas].map(([n, r]) => [n, { status: r.status, generation: r.metadata.generation ?? 0 }]),
      ),
      placementFailure: placement.ok ? undefined : { reason: placement.reason, message: placement.message },
      roles,
      port,
      deleting,
      now,
    });
    // The status first: a new Primary, epoch or fence is committed by this write, which
    // is conditional on the resourceVersion read. Only then are the replicas told, so a
    // promotion never reaches an agent unless it won against a fence written meanwhile.
    await this.#writeStatus(rv, status, log);
    if (roles?.failover && roles.failover.epoch !== rv.status?.lastFailover?.epoch) {
      if (roles.reason === 'Failover') this.#metrics?.failovers.inc({ namespace, volume: name });
      log.warn({ ...roles.failover, reason: roles.reason }, roles.message);
    }
    if (placement.ok && port !== undefined && roles)
      await this.#applyReplicas(rv, placement, port, roles, replicas, deleting, log);
    this.#metrics?.observe(namespace, name, status);
    if (
      roles?.reason === 'Stable' &&
      roles.forcePrimary === undefined &&
      rv.metadata.annotations?.[ANNOTATIONS.forcePrimary] !== undefined
    )
      await this.#dropForceAnnotation(rv, log);

    if (deleting) return this.#finishDeletion(rv, replicas, nodes, log);
    // Level-based backstop: agents report every few seconds; look again while not Ready,
    // and when a failover clock runs, when it expires.
    const backstop = status.phase === 'Ready' ? 30_000 : 3_000;
    return { requeueAfterMs: Math.min(backstop, roles?.recheckAfterMs ?? Infinity) };
  }

  #replicasOf(rv: ReplicatedVolume): Map<string, ReplicatedVolumeReplica> {
    const out = new Map<string, ReplicatedVolumeReplica>();
    for (const o of this.#caches.replicas.list(rv.metadata.namespace)) {
      if (o.metadata?.labels?.[LABELS.volume] !== rv.metadata.name) continue;
      const r = ReplicatedVolumeReplica.safeParse(o);
      if (r.success && r.data.metadata.ownerReferences?.some((ref) => ref.uid === rv.metadata.uid))
        out.set(r.data.spec.node, r.data);
    }
    return out;
  }

  async #ensureFinalizer(rv: ReplicatedVolume, log: Logger): Promise<ReplicatedVolume> {
    if (rv.metadata.finalizers?.includes(FINALIZER)) return rv;
    const updated = await this.#api.patchVolumeMeta(
      rv,
      { finalizers: [...(rv.metadata.finalizers ?? []), FINALIZER] },
      true,
    );
    log.info('Added finalizer');
    return ReplicatedVolume.parse(updated);
  }

  /** The volume's replication port, allocated once and kept in an annotation. */
  async #ensurePort(
    rv: ReplicatedVolume,
    current: number | undefined,
    log: Logger,
  ): Promise<{ rv: ReplicatedVolume; port: number }> {
    const key = `${rv.metadata.namespace}/${rv.metadata.name}`;
    if (current !== undefined) return { rv, port: current };
    const used = new Set<number>();
    for (const o of this.#caches.volumes.list()) {
      const p = Number(o.metadata?.annotations?.[ANNOTATIONS.port]);
      if (p) used.add(p);
    }
    for (const [p, owner] of this.#reservedPorts) if (owner !== key) used.add(p);
    const port = allocatePort(used, PORT_RANGE);
    if (port === undefined)
      throw new TerminalError(
        'NoFreePort',
        `All ${PORT_RANGE.count} replication ports from ${PORT_RANGE.first} are in use`,
      );
    this.#reservedPorts.set(port, key);
    const updated = await this.#api.patchVolumeMeta(rv, { annotations: { [ANNOTATIONS.port]: String(port) } }, true);
    log.info({ port }, 'Allocated replication port');
    return { rv: ReplicatedVolume.parse(updated), port };
  }

  async #ensureSecret(rv: ReplicatedVolume, log: Logger): Promise<void> {
    if (await this.#api.ensurePeerSecret(rv)) log.info('Created peer secret');
  }

  async #applyReplicas(
    rv: ReplicatedVolume,
    placement: Placement & { ok: true },
    port: number,
    roles: RolesDecision,
    current: Map<string, ReplicatedVolumeReplica>,
    deleting: boolean,
    log: Logger,
  ): Promise<void> {
    const engine = decideEngineState(
      deleting,
      rv.spec.replicas.map((r) => current.get(r.node)?.spec.engine),
      rv.spec.replicas.map((r) => current.get(r.node)?.status),
    );
    for (const spec of desiredReplicaSpecs(rv, placement.replicas, port, roles, engine)) {
      const have = current.get(spec.node);
      if (have && canonicalJson(have.spec) === canonicalJson(spec)) continue;
      // While deleting, only existing replicas are told to go Down: a replica already gone
      // (namespace teardown deletes them first) leaves an orphan engine its agent takes down.
      if (deleting && !have) continue;
      await this.#api.applyReplica(rv, spec);
      log.info(
        {
          node: spec.node,
          role: spec.role,
          engine: spec.engine,
          epoch: spec.epoch,
          ...(spec.initialSync ? { initialSync: true } : {}),
        },
        have ? 'Updated replica' : 'Created replica',
      );
    }
  }

  async #writeStatus(rv: ReplicatedVolume, status: ReplicatedVolumeStatus, log: Logger): Promise<void> {
    if (sameStatus(rv.status, status)) return;
    await this.#api.replaceVolumeStatus(rv, status);
    log.debug({ phase: status.phase }, 'Updated status');
    for (const e of eventsBetween(rv.status, status)) {
      await this.#api
        .recordEvent(rv, e)
        .catch((err: unknown) => log.warn({ err, reason: e.reason }, 'Could not record event'));
      log.info({ reason: e.reason, detail: e.message }, 'Recorded event');
    }
  }

  /** The operator's force-primary took effect: the annotation goes, so it never forces again. */
  async #dropForceAnnotation(rv: ReplicatedVolume, log: Logger): Promise<void> {
    await this.#api.patchVolumeMeta(rv, { annotations: { [ANNOTATIONS.forcePrimary]: null } }, false);
    log.info('Removed the force-primary annotation; the forced node is Primary');
  }

  async #finishDeletion(
    rv: ReplicatedVolume,
    replicas: Map<string, ReplicatedVolumeReplica>,
    nodes: Map<string, NodeView>,
    log: Logger,
  ): Promise<ReconcileResult> {
    const waiting = [...replicas.values()].filter((r) => {
      const n = nodes.get(r.spec.node);
      if (!n?.ready) return false; // an unreachable node cannot answer; its engine is left as it is
      const s = r.status;
      const acted = (s?.observedGeneration ?? -1) >= (r.metadata.generation ?? 0) && r.spec.engine === 'Down';
      return !(acted && (s?.role === undefined || s.role === 'Unconfigured'));
    });
    if (waiting.length > 0) {
      log.info({ nodes: waiting.map((r) => r.spec.node) }, 'Waiting for engines to go down');
      return { requeueAfterMs: 1000 };
    }
    const finalizers = (rv.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
    await this.#api.patchVolumeMeta(rv, { finalizers }, true);
    for (const [p, owner] of this.#reservedPorts)
      if (owner === `${rv.metadata.namespace}/${rv.metadata.name}`) this.#reservedPorts.delete(p);
    log.info('Removed finalizer; engines are down');
    return {};
  }
}
