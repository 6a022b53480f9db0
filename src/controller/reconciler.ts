// Reconcile one ReplicatedVolume. Level-based: read the world from the caches,
// decide with pure functions (decisions/), act, write status once. The spine:
//
//   finalizer → placement → port + peer Secret → roles → replicas → status → workload
//
// Workload: after a failover, once the status read back from the API server holds its
// fence, the lost node's pods on the volume and our VolumeAttachments to that node are
// deleted (decisions/workload.ts), and status.lastWorkloadRelease says so.
//
// Deletion: replicas are told engine=Down (demote, `down`, a pool file removed,
// a granted device's data left as it is); once
// every reachable agent reports its engine gone, the finalizer is removed and
// the garbage collector takes the replicas (owner references). The peer Secret lives
// in the operator's namespace, out of the user's reach and of owner references: the
// controller deletes it just before the finalizer goes.
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { agentLeaseName, ANNOTATIONS, CONDITIONS, FINALIZER, LABELS, PORT_RANGE } from '../api/names.ts';
import { ReplicatedVolume, type ReplicatedVolumeStatus } from '../api/replicated-volume.ts';
import {
  deviceBytesFor,
  ReplicatedVolumeReplica,
  type ReplicatedVolumeReplicaSpec,
} from '../api/replicated-volume-replica.ts';
import { type ClaimSource, fileClaimOf, fileClaimsOf, StoragePool } from '../api/storage-pool.ts';
import { canonicalJson } from '../runtime/canonical-json.ts';
import { type Clock, systemClock } from '../runtime/clock.ts';
import { TerminalError } from '../runtime/errors.ts';
import { isConflict, isNotFound } from '../runtime/kube.ts';
import { allocatePort, decidePlacement, type NodeView, type Placement } from './decisions/placement.ts';
import { portClaim, portsInUse, trustedPort } from './decisions/port.ts';
import { nodeSecretNames, staleNodeAccess, type VolumeOnNodes } from './decisions/node-access.ts';
import { decideEngineState, desiredReplicaSpecs } from './decisions/replicas.ts';
import { leaseRenewTime } from './agent-lease.ts';
import { agentSilence, decideRoles, type RolesDecision } from './decisions/roles.ts';
import { parseQuantity } from '../api/quantity.ts';
import { decideGrowth } from './decisions/growth.ts';
import { peerSecretDue } from './decisions/peer-secret.ts';
import {
  aggregateStatus,
  eventsBetween,
  HEARTBEAT_STALE_MS,
  sameStatus,
  type StatusInput,
} from './decisions/status.ts';
import type { ControllerMetrics } from './metrics.ts';
import type { FreshRead, VolumeApi } from './volume-api.ts';
import { DRIVER_NAME, volumeId } from '../csi/identity.ts';
import { csiUniqueVolumeName, keepsPodsOff, releaseDue, volumePvs, workloadToFree } from './decisions/workload.ts';
import type { WorkloadApi } from './workload-api.ts';

export interface Caches {
  volumes: {
    list(): readonly k8s.KubernetesObject[];
    get(name: string, namespace?: string): k8s.KubernetesObject | undefined;
  };
  replicas: { list(namespace?: string): readonly k8s.KubernetesObject[] };
  nodes: { list(): readonly k8s.V1Node[] };
  /** StoragePools (cluster-scoped). */
  pools: { get(name: string): k8s.KubernetesObject | undefined };
  /** The Leases of the release namespace: each node's agent renews tandem-agent-NODE. None: no Leases (only reports). */
  leases?: { list(): readonly k8s.KubernetesObject[] } | undefined;
}

export type ReconcileResult = { requeueAfterMs?: number };

/** A replica's agent is asked for a report at most this often (the annotation is a write). */
export const REPORT_REQUEST_EVERY_MS = 2_000;

/** The work queue's key for collecting gone nodes' access objects (not a volume: no slash). */
export const NODE_ACCESS_KEY = 'node-access';

/**
 * A cache object as storage-pool.ts's fileClaimOf reads it; undefined for an object that
 * is not a well-formed volume (it claims nothing).
 */
function claimSource(o: object): ClaimSource | undefined {
  const v = o as {
    metadata?: { namespace?: string; name?: string; creationTimestamp?: Date | string };
    spec?: { pool?: unknown; size?: unknown; replicas?: unknown };
    status?: { conditions?: unknown };
  };
  const m = v.metadata;
  const spec = v.spec;
  if (!m?.namespace || !m.name || typeof spec?.pool !== 'string' || !Array.isArray(spec.replicas)) return undefined;
  return {
    metadata: { namespace: m.namespace, name: m.name, creationTimestamp: m.creationTimestamp },
    spec: {
      pool: spec.pool,
      size: typeof spec.size === 'string' ? spec.size : undefined,
      replicas: (spec.replicas as { node?: unknown; disk?: unknown }[]).map((r) => ({
        node: String(r?.node ?? ''),
        disk: typeof r?.disk === 'string' ? r.disk : undefined,
      })),
    },
    status: { conditions: Array.isArray(v.status?.conditions) ? v.status.conditions : undefined },
  };
}

/** What one decision reads: the volume, its replicas by node, the nodes, their agents' Lease renewals. */
type Snapshot = {
  rv: ReplicatedVolume;
  replicas: Map<string, ReplicatedVolumeReplica>;
  nodes: Map<string, NodeView>;
  agents: Record<string, string | undefined>;
};

type Plan = {
  placement: Placement;
  port: number | undefined;
  roles: RolesDecision | undefined;
  status: ReplicatedVolumeStatus;
  /** Replica specs to write (only those that differ from what was read). */
  replicaSpecs: ReplicatedVolumeReplicaSpec[];
  /** The plan orders an engine, or moves the Primary, the epoch or the fence. */
  changesOrders: boolean;
};

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

/**
 * How long until the first replica's agent goes silent for HEARTBEAT_STALE_MS (a moment
 * after; roles.ts agentSilence: its report or its Lease); Infinity when none will.
 */
export function staleInMs(
  replicas: Iterable<ReplicatedVolumeReplica>,
  now: Date,
  agents: Readonly<Record<string, string | undefined>> = {},
): number {
  let soonest = Infinity;
  for (const r of replicas) {
    const silent = agentSilence(r.status?.lastHeartbeatTime, agents[r.spec.node], now);
    if (silent === undefined) continue;
    const left = HEARTBEAT_STALE_MS - silent;
    if (left >= 0) soonest = Math.min(soonest, left + 250);
  }
  return soonest;
}

/** What the reconciler reports to metrics; the simulator passes none. */
export type ReconcilerMetrics = Pick<ControllerMetrics, 'observe'> & { failovers: { inc(l: object): void } };

export class VolumeReconciler {
  readonly #api: VolumeApi;
  readonly #caches: Caches;
  readonly #log: Logger;
  readonly #metrics: ReconcilerMetrics | undefined;
  readonly #clock: Clock;
  /** Pods, claims and attachments for the workload release; undefined: no release (the simulator). */
  readonly #workload: WorkloadApi | undefined;
  /** Ports handed out but maybe not yet seen in the cache (several workers). */
  readonly #reservedPorts = new Map<number, string>();
  /** The Secret names last written into each node's Role (JSON). */
  readonly #nodeAccess = new Map<string, string>();
  /** Nodes whose TLS Secret exists (issued once; see ensureNodeTls). */
  readonly #nodeTls = new Set<string>();
  /** When each volume's peer Secret was last found or made, by key, for the volume of that uid (decisions/peer-secret.ts). */
  readonly #peerSecrets = new Map<string, { uid: string | undefined; at: number }>();

  constructor(o: {
    api: VolumeApi;
    caches: Caches;
    log: Logger;
    metrics?: ReconcilerMetrics;
    clock?: Clock;
    workload?: WorkloadApi;
  }) {
    this.#api = o.api;
    this.#workload = o.workload;
    this.#caches = o.caches;
    this.#log = o.log;
    this.#metrics = o.metrics;
    this.#clock = o.clock ?? systemClock;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    if (key === NODE_ACCESS_KEY) return this.#collectNodeAccess();
    const [namespace, name] = key.split('/') as [string, string];
    const raw = this.#caches.volumes.get(name, namespace);
    if (!raw) {
      this.#peerSecrets.delete(key);
      this.#metrics?.observe(namespace, name, undefined);
      return {};
    }
    const parsed = ReplicatedVolume.safeParse(raw);
    if (!parsed.success) throw new TerminalError('InvalidSpec', `${key}: ${parsed.error.message}`);
    let rv = parsed.data;
    const log = this.#log.child({ rv: key });
    const now = this.#clock.now();
    const deleting = rv.metadata.deletionTimestamp !== undefined;
    if (deleting && !rv.metadata.finalizers?.includes(FINALIZER)) return {};
    if (!deleting) rv = await this.#ensureFinalizer(rv, log);

    let snap: Snapshot = {
      rv,
      replicas: this.#replicasOf(rv, this.#caches.replicas.list(rv.metadata.namespace)),
      nodes: new Map(this.#caches.nodes.list().map((n) => [n.metadata?.name ?? '', nodeView(n)])),
      agents: this.#agents(rv),
    };
    const placement0 = this.#place(rv, snap.nodes, snap.replicas.size > 0);
    if (placement0.ok && !deleting) {
      ({ rv } = await this.#ensurePort(rv, this.#port(rv), log));
      await this.#ensureSecret(rv, log);
      snap = { ...snap, rv };
    }

    let plan = this.#plan(snap, now, deleting);
    if (plan.changesOrders) {
      // Orders to engines and a new chosen Primary are decided again on a fresh read
      // of the volume, its replicas and its nodes, never on the caches alone: a cache
      // may lag the API server (our own writes included) by seconds.
      const fresh = await this.#readFresh(snap.rv);
      if (!fresh) return {};
      snap = fresh;
      plan = this.#plan(snap, now, deleting);
    }
    rv = snap.rv;
    const { placement, port, roles, status } = plan;
    // The status first, conditional on the resourceVersion read (written even when it did
    // not change, when orders follow: then it only confirms that the volume has not moved):
    // a new Primary, epoch or fence is committed by it, and a replica is told only after
    // it won against a fence an agent wrote meanwhile.
    await this.#writeStatus(rv, status, log, plan.changesOrders);
    if (roles?.failover && roles.failover.epoch !== rv.status?.lastFailover?.epoch) {
      if (roles.reason === 'Failover') this.#metrics?.failovers.inc({ namespace, volume: name });
      log.warn({ ...roles.failover, reason: roles.reason }, roles.message);
    }
    if (roles?.roleChange && roles.roleChange.epoch !== rv.status?.lastRoleChange?.epoch)
      log.info({ ...roles.roleChange }, 'Changed the Primary');
    if (placement.ok && port !== undefined && roles)
      await this.#applyReplicas(rv, plan.replicaSpecs, snap.replicas, deleting, log);
    this.#metrics?.observe(namespace, name, status, { renewTimes: snap.agents, now });
    if (
      roles?.reason === 'Stable' &&
      roles.forcePrimary === undefined &&
      rv.metadata.annotations?.[ANNOTATIONS.forcePrimary] !== undefined
    )
      await this.#dropForceAnnotation(rv, log);
    // On the status as read (rv.status), never the one just computed: the fence must be in the API first.
    if (!deleting) await this.#freeWorkload(rv, log);
    if (roles?.requestReport && !deleting) await this.#requestReport(snap.replicas.get(roles.requestReport), now, log);

    if (deleting) return this.#finishDeletion(rv, snap.replicas, snap.nodes, log);
    // Level-based backstop: look again soon while not Ready, and when a failover clock runs,
    // when it expires; and when a replica's heartbeat would go stale (AgentSilent), since
    // heartbeats alone enqueue nothing (change-filter.ts).
    const backstop = status.phase === 'Ready' ? 30_000 : 3_000;
    return {
      requeueAfterMs: Math.min(
        backstop,
        roles?.recheckAfterMs ?? Infinity,
        staleInMs(snap.replicas.values(), now, snap.agents),
      ),
    };
  }

  /** The volume's port: status.port, or an annotation no user could have set to another's port (decisions/port.ts). */
  #port(rv: ReplicatedVolume): number | undefined {
    return trustedPort(portClaim(rv), this.#caches.volumes.list().map(portClaim));
  }

  /** Placement from the volume's StoragePool as the cache has it (an unparsable pool is no pool). */
  #place(rv: ReplicatedVolume, nodes: ReadonlyMap<string, NodeView>, existing: boolean): Placement {
    const raw = this.#caches.pools.get(rv.spec.pool);
    const pool = raw ? StoragePool.safeParse(raw) : undefined;
    // A pool directory's capacity is checked before a volume's first replica exists, never after.
    const source = existing ? undefined : claimSource(rv);
    const self = source && fileClaimOf(source);
    const files = self && {
      self,
      all: fileClaimsOf(this.#caches.volumes.list().flatMap((v) => claimSource(v) ?? [])),
    };
    return decidePlacement(
      rv.spec.replicas,
      nodes,
      existing,
      { namespace: rv.metadata.namespace, name: rv.metadata.name, pool: rv.spec.pool, files },
      pool?.success ? pool.data.spec : undefined,
    );
  }

  /**
   * The size the replicas are given: spec.size, unless it grew past a pool directory's
   * capacity (decisions/growth.ts); and the volume's Sized condition once it has grown.
   */
  #growth(rv: ReplicatedVolume, replicas: Snapshot['replicas']) {
    const wanted = rv.spec.size ? parseQuantity(rv.spec.size) : undefined;
    const given = Math.max(...[...replicas.values()].map((r) => r.spec.sizeBytes ?? 0));
    const raw = this.#caches.pools.get(rv.spec.pool);
    const pool = raw ? StoragePool.safeParse(raw) : undefined;
    const source = claimSource(rv);
    const self = source && fileClaimOf(source);
    const decision = decideGrowth({
      wanted,
      given: given > 0 ? given : undefined,
      pool: rv.spec.pool,
      poolSpec: pool?.success ? pool.data.spec : undefined,
      fileNodes: rv.spec.replicas.filter((r) => r.disk === undefined).map((r) => r.node),
      claims: self ? fileClaimsOf(this.#caches.volumes.list().flatMap((v) => claimSource(v) ?? [])) : [],
      self: self ?? { key: `${rv.metadata.namespace}/${rv.metadata.name}`, created: '' },
    });
    let sized: StatusInput['sized'];
    if (decision.refused) sized = { status: 'False', ...decision.refused };
    else if (wanted !== undefined && given > 0) {
      const device = deviceBytesFor(wanted);
      // Only what the engines reported: a replica that has not started yet is not "growing".
      const reported = [...replicas.values()].filter((r) => (r.status?.sizeBytes ?? 0) > 0);
      const short = reported.filter((r) => (r.status?.sizeBytes ?? 0) < device).map((r) => r.spec.node);
      sized =
        reported.length === 0
          ? undefined
          : short.length === 0
            ? { status: 'True', reason: 'AtSize', message: `Both replicas hold ${device} bytes` }
            : { status: 'False', reason: 'Growing', message: `Growing to ${device} bytes on ${short.join(' and ')}` };
    }
    return { sizeBytes: decision.sizeBytes, sized };
  }

  /** Placement, roles, status and the replicas' specs: pure, from one snapshot. */
  #plan(snap: Snapshot, now: Date, deleting: boolean): Plan {
    const { rv, replicas, nodes, agents } = snap;
    const placement = this.#place(rv, nodes, replicas.size > 0);
    const port = this.#port(rv);
    let roles: RolesDecision | undefined;
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
        publishedTo: rv.metadata.annotations?.[ANNOTATIONS.csiPublishedNode],
        now,
        observed: rv.spec.replicas.map((r) => {
          const have = replicas.get(r.node);
          return {
            node: r.node,
            ...have?.status,
            agentRenewTime: agents[r.node],
            ...(have
              ? {
                  ordered: { role: have.spec.role, initialSync: have.spec.initialSync, epoch: have.spec.epoch },
                  stale: (have.status?.observedGeneration ?? -1) < (have.metadata.generation ?? 0),
                }
              : {}),
          };
        }),
      });
    }
    const growth = this.#growth(rv, replicas);
    const status = aggregateStatus({
      generation: rv.metadata.generation ?? 0,
      previous: rv.status,
      nodes: rv.spec.replicas.map((r) => r.node),
      replicas: new Map(
        [...replicas].map(([n, r]) => [n, { status: r.status, generation: r.metadata.generation ?? 0 }]),
      ),
      placementFailure: placement.ok ? undefined : { reason: placement.reason, message: placement.message },
      agentRenewTimes: agents,
      sized: growth.sized,
      roles,
      port,
      deleting,
      now,
    });
    let replicaSpecs: ReplicatedVolumeReplicaSpec[] = [];
    if (placement.ok && port !== undefined && roles) {
      const engine = decideEngineState(
        deleting,
        rv.spec.replicas.map((r) => replicas.get(r.node)?.spec.engine),
        rv.spec.replicas.map((r) => replicas.get(r.node)?.status),
      );
      replicaSpecs = desiredReplicaSpecs(rv, placement.replicas, port, roles, engine, growth.sizeBytes).filter(
        (spec) => {
          const have = replicas.get(spec.node);
          // While deleting, only existing replicas are told to go Down: a replica already gone
          // (namespace teardown deletes them first) leaves an orphan engine its agent takes down.
          if (deleting && !have) return false;
          return !have || canonicalJson(have.spec) !== canonicalJson(spec);
        },
      );
    }
    const s0 = rv.status;
    const changesOrders =
      replicaSpecs.length > 0 ||
      status.primary !== s0?.primary ||
      (status.epoch ?? 0) !== (s0?.epoch ?? 0) ||
      canonicalJson(status.fence) !== canonicalJson(s0?.fence);
    return { placement, port, roles, status, replicaSpecs, changesOrders };
  }

  /** The volume, its replicas and its nodes as the API server has them now; undefined when the volume is gone. */
  async #readFresh(rv: ReplicatedVolume): Promise<Snapshot | undefined> {
    let fresh: FreshRead;
    try {
      fresh = await this.#api.readFresh(
        rv.metadata.namespace,
        rv.metadata.name,
        rv.spec.replicas.map((r) => r.node),
      );
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    const parsed = ReplicatedVolume.safeParse(fresh.volume);
    if (!parsed.success) throw new TerminalError('InvalidSpec', parsed.error.message);
    return {
      rv: parsed.data,
      replicas: this.#replicasOf(parsed.data, fresh.replicas as k8s.KubernetesObject[]),
      nodes: new Map(fresh.nodes.map((n) => [n.metadata?.name ?? '', nodeView(n)])),
      agents: fresh.agents,
    };
  }

  /** When each of the volume's nodes' agents last renewed its Lease, from the cache. */
  #agents(rv: ReplicatedVolume): Record<string, string | undefined> {
    const leases = this.#caches.leases?.list() ?? [];
    return Object.fromEntries(
      rv.spec.replicas.map((r) => [
        r.node,
        leaseRenewTime(leases.find((l) => l.metadata?.name === agentLeaseName(r.node))),
      ]),
    );
  }

  #replicasOf(rv: ReplicatedVolume, objects: readonly k8s.KubernetesObject[]): Map<string, ReplicatedVolumeReplica> {
    const out = new Map<string, ReplicatedVolumeReplica>();
    for (const o of objects) {
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
    const used = portsInUse(this.#caches.volumes.list().map(portClaim));
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
    const key = `${rv.metadata.namespace}/${rv.metadata.name}`;
    const seen = this.#peerSecrets.get(key);
    const now = this.#clock.now().getTime();
    // A volume made again under the same name is a new volume.
    const at = seen?.uid === rv.metadata.uid ? seen?.at : undefined;
    if (peerSecretDue(at, rv.status?.phase === 'Ready', now)) {
      if (await this.#api.ensurePeerSecret(rv)) log.info('Created peer secret');
      this.#peerSecrets.set(key, { uid: rv.metadata.uid, at: now });
    }
    await this.#ensureNodeAccess(
      rv.spec.replicas.map((r) => r.node),
      log,
    );
  }

  /**
   * Each of `nodes` may read exactly its own Secrets (decisions/node-access.ts), from
   * every volume the cache holds; `without` is a volume whose finalizer just went.
   * Written only when it differs from what this controller last wrote.
   */
  async #ensureNodeAccess(nodes: readonly string[], log: Logger, without?: string): Promise<void> {
    const volumes = this.#volumesOnNodes(without);
    for (const node of new Set(nodes)) {
      if (!this.#nodeTls.has(node) && without === undefined) {
        if (await this.#api.ensureNodeTls(node)) log.info({ node }, "Issued the node's TLS certificate");
        this.#nodeTls.add(node);
      }
      const names = nodeSecretNames(node, volumes);
      const json = JSON.stringify(names);
      if (this.#nodeAccess.get(node) === json) continue;
      if (await this.#api.ensureNodeAccess(node, names))
        log.info({ node, secrets: names.length }, 'Updated node access');
      this.#nodeAccess.set(node, json);
    }
  }

  /** Every volume in the cache with the nodes it names; `without` counts as gone. */
  #volumesOnNodes(without?: string): VolumeOnNodes[] {
    return this.#caches.volumes.list().map((o) => {
      const m = o.metadata ?? {};
      const key = `${m.namespace}/${m.name}`;
      return {
        namespace: m.namespace ?? '',
        name: m.name ?? '',
        nodes: ((o as { spec?: { replicas?: { node?: string }[] } }).spec?.replicas ?? []).map((r) => r.node ?? ''),
        gone: key === without || (m.deletionTimestamp !== undefined && !m.finalizers?.includes(FINALIZER)),
      };
    });
  }

  /**
   * The access objects of nodes that are gone and hold no replica (decisions/node-access.ts
   * staleNodeAccess), deleted: a removed node's ServiceAccount keeps no Role to Secrets.
   * Run when a Node or a volume leaves the caches, and when this controller starts leading.
   */
  async #collectNodeAccess(): Promise<ReconcileResult> {
    const live = new Set(this.#caches.nodes.list().map((n) => n.metadata?.name ?? ''));
    const stale = staleNodeAccess(await this.#api.listNodeAccess(), live, this.#volumesOnNodes());
    for (const node of stale) {
      // The cache may lag behind a node that came back: ask the API server before deleting.
      if (await this.#api.nodeExists(node)) continue;
      await this.#api.deleteNodeAccess(node);
      this.#nodeAccess.delete(node);
      this.#nodeTls.delete(node);
      this.#log.info(
        { node },
        'Deleted the access objects of a node that is gone (ServiceAccount, Role, RoleBinding, TLS Secret)',
      );
    }
    return {};
  }

  /** Each replica's spec, conditional on the resourceVersion of the replica the decision read. */
  async #applyReplicas(
    rv: ReplicatedVolume,
    specs: readonly ReplicatedVolumeReplicaSpec[],
    current: Map<string, ReplicatedVolumeReplica>,
    deleting: boolean,
    log: Logger,
  ): Promise<void> {
    // Secondary orders first: a Primary order never reaches a node before the other's demotion.
    const ordered = [...specs].sort((a, b) => (a.role === b.role ? 0 : a.role === 'Secondary' ? -1 : 1));
    for (const spec of ordered) {
      const have = current.get(spec.node);
      if (deleting && !have) continue;
      if (have) await this.#api.replaceReplica(rv, have, spec);
      else await this.#api.createReplica(rv, spec);
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

  async #writeStatus(
    rv: ReplicatedVolume,
    status: ReplicatedVolumeStatus,
    log: Logger,
    confirm: boolean,
  ): Promise<void> {
    if (sameStatus(rv.status, status) && !confirm) return;
    await this.#api.replaceVolumeStatus(rv, status);
    log.debug({ phase: status.phase }, 'Updated status');
    for (const e of eventsBetween(rv.status, status)) {
      await this.#api
        .recordEvent(rv, e)
        .catch((err: unknown) => log.warn({ err, reason: e.reason }, 'Could not record event'));
      log.info({ reason: e.reason, detail: e.message }, 'Recorded event');
    }
  }

  /**
   * After a failover whose fence the API server holds: the lost node's pods on the volume
   * (force-deleted: the node is gone and fenced) and our VolumeAttachments of it to that
   * node (decisions/workload.ts). Idempotent: deletions carry the uid read and take a
   * 404 or 409 as done; status.lastWorkloadRelease, written last, ends it for the epoch.
   */
  async #freeWorkload(rv: ReplicatedVolume, log: Logger): Promise<void> {
    if (!this.#workload || !releaseDue(rv.status)) return;
    // The cache may lag: decide again on the volume as the API server has it now.
    const fresh = await this.#readFresh(rv);
    if (!fresh) return;
    const due = releaseDue(fresh.rv.status);
    if (!due) return;
    const w = this.#workload;
    // Not before the scheduler keeps pods off the lost node; the reconcile looks again soon.
    if (!keepsPodsOff(await w.readNodeScheduling(due.node))) {
      log.info({ node: due.node }, 'Waiting for the lost node to be tainted NoSchedule before freeing its pods');
      return;
    }
    const handle = volumeId(rv.metadata.namespace, rv.metadata.name);
    const pvs = volumePvs({ driver: DRIVER_NAME, volumeHandle: handle, pvs: await w.listPersistentVolumes() });
    const claimRefs = pvs.flatMap((pv) =>
      pv.claim?.namespace && pv.claim.name ? [{ namespace: pv.claim.namespace, name: pv.claim.name }] : [],
    );
    const pvcs = await w.readClaims(claimRefs);
    const namespaces = [...new Set(pvcs.map((c) => c.namespace))];
    const pods = (await Promise.all(namespaces.map((n) => w.listPodsOnNode(n, due.node)))).flat();
    const attachments = pvs.length > 0 ? await w.listVolumeAttachments() : [];
    const release = workloadToFree(due, { driver: DRIVER_NAME, volumeHandle: handle, pvs, pvcs, pods, attachments });
    const deletedPods: string[] = [];
    for (const p of release.pods) {
      const outcome = await w.deletePod(p);
      if (outcome === 'deleted') deletedPods.push(`${p.namespace}/${p.name}`);
      log.info(
        { pod: `${p.namespace}/${p.name}`, node: due.node },
        outcome === 'deleted' ? 'Force-deleted pod on the lost node' : 'Found pod on the lost node already gone',
      );
    }
    const deletedAttachments: string[] = [];
    for (const a of release.attachments) {
      const outcome = await w.deleteVolumeAttachment(a);
      if (outcome === 'deleted') deletedAttachments.push(a.name);
      log.info(
        { volumeAttachment: a.name, node: due.node },
        outcome === 'deleted'
          ? 'Deleted VolumeAttachment to the lost node'
          : 'Found VolumeAttachment to the lost node already gone',
      );
    }
    // The dead kubelet still lists the volume in use, so the attach/detach controller would
    // not detach it (nor attach it on the new Primary) until its next resync, a minute away.
    // Only a shortcut: without it the attach/detach controller's resync frees the volume
    // within its period, so a failure (an old chart's RBAC without nodes/status) is logged
    // and the release goes on.
    let inUse: 'dropped' | 'absent' | 'failed' = 'absent';
    if (pvs.length > 0) {
      inUse = await w.dropVolumeInUse(due.node, csiUniqueVolumeName(DRIVER_NAME, handle)).catch((err: unknown) => {
        log.warn({ err, node: due.node }, "Could not remove the volume from the lost node's volumesInUse");
        return 'failed' as const;
      });
      if (inUse === 'dropped') log.info({ node: due.node }, "Removed the volume from the lost node's volumesInUse");
    }
    const at = this.#clock
      .now()
      .toISOString()
      .replace(/\.\d+Z$/, 'Z');
    if (deletedPods.length > 0 || deletedAttachments.length > 0 || inUse === 'dropped') {
      const list = (xs: string[]) => (xs.length > 0 ? xs.join(', ') : 'none');
      const cleared =
        inUse === 'dropped' ? `; removed it from ${due.node}'s volumesInUse so it can be detached now` : '';
      const e = {
        type: 'Normal' as const,
        reason: 'WorkloadFreed',
        message: `Freed the workload on ${due.node} (failed over to ${due.primary} at epoch ${due.epoch}, ${due.node} fenced): force-deleted pods ${list(deletedPods)}; deleted VolumeAttachments ${list(deletedAttachments)}${cleared}`,
      };
      await this.#api
        .recordEvent(fresh.rv, e)
        .catch((err: unknown) => log.warn({ err, reason: e.reason }, 'Could not record event'));
    }
    // The record is bounded (the CRD's maxItems); the event and the log have every name.
    await w.recordRelease(fresh.rv, {
      node: due.node,
      epoch: due.epoch,
      pods: deletedPods.slice(0, 64),
      volumeAttachments: deletedAttachments.slice(0, 64),
      at,
    });
    log.info(
      { node: due.node, epoch: due.epoch, pods: deletedPods, volumeAttachments: deletedAttachments },
      'Freed the workload on the lost node',
    );
  }

  /**
   * A decision waits on a fresh report of this replica (roles.ts requestReport): ask its agent
   * with tandem.dev/report-requested, at most every REPORT_REQUEST_EVERY_MS per replica.
   */
  async #requestReport(r: ReplicatedVolumeReplica | undefined, now: Date, log: Logger): Promise<void> {
    if (!r) return;
    const asked = Date.parse(r.metadata.annotations?.[ANNOTATIONS.reportRequested] ?? '');
    if (now.getTime() - asked < REPORT_REQUEST_EVERY_MS) return;
    // The object as read, not as parsed: the update must leave the spec exactly as it is.
    const raw = this.#caches.replicas
      .list(r.metadata.namespace)
      .find((o) => o.metadata?.name === r.metadata.name && o.metadata?.resourceVersion === r.metadata.resourceVersion);
    if (!raw) return;
    try {
      await this.#api.requestReport(raw, now.toISOString());
      log.debug({ rvr: r.metadata.name }, 'Requested a report');
    } catch (err) {
      // Gone, or it moved since it was read (a report may have come): the next look asks again.
      if (!isNotFound(err) && !isConflict(err)) throw err;
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
      // A pool file the agent could not remove yet (an I/O error) is tried again before the volume goes.
      const removing = s?.conditions?.some((c) => c.type === CONDITIONS.engineReady && c.reason === 'RemoveFailed');
      return !(acted && !removing && (s?.role === undefined || s.role === 'Unconfigured'));
    });
    if (waiting.length > 0) {
      log.info({ nodes: waiting.map((r) => r.spec.node) }, 'Waiting for engines to go down');
      return { requeueAfterMs: 1000 };
    }
    await this.#api.deletePeerSecret(rv);
    this.#peerSecrets.delete(`${rv.metadata.namespace}/${rv.metadata.name}`);
    const finalizers = (rv.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
    await this.#api.patchVolumeMeta(rv, { finalizers }, true);
    for (const [p, owner] of this.#reservedPorts)
      if (owner === `${rv.metadata.namespace}/${rv.metadata.name}`) this.#reservedPorts.delete(p);
    log.info('Removed finalizer; engines are down');
    await this.#ensureNodeAccess(
      rv.spec.replicas.map((r) => r.node),
      log,
      `${rv.metadata.namespace}/${rv.metadata.name}`,
    );
    return {};
  }
}
