// The node agent: for every ReplicatedVolumeReplica of this node, make the
// engine match the spec and report what it is. Level-based, one replica at a
// time per key (the runtime's work queue and worker loop, as the controller),
// every few seconds and at every change of the replica. One pass:
//
//   read    → the replica (cache), the engine's status (once), disks, the mount path
//   plan    → plan.ts: actions + conditions, a pure function of what was read
//             (and of the volume's status, read only when the plan asks for it)
//   act     → executor.ts runs the actions; the first failure ends the pass
//   report  → the replica's status from what was read, when nothing was done;
//             after acting, the next pass (at once) reads again and reports
//
// The status names the generation and epoch of the spec the agent last acted on
// (observedGeneration, epoch): a report never claims an order it has not carried out.
// It is written when it changes, every second while the engine is apart from its peer
// (failover evidence), when the controller asks (tandem.dev/report-requested), and
// otherwise once a minute. The agent's liveness is its Lease (tandem-agent-NODE),
// renewed every HEARTBEAT_MS by the work loop, only after reading the engine host:
// an agent whose loop or engine host hangs stops renewing.
//
// Engines found running for resources no replica of this node names (after the
// informer has synced) are taken down: their volume is gone. The engines' handlers
// (fence-peer, unfence-peer, split-brain) reach the agent through handle().
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { ConditionInput } from '../api/condition.ts';
import { ANNOTATIONS, KINDS } from '../api/names.ts';
import { describeFence } from '../api/replicated-volume.ts';
import {
  ReplicatedVolumeReplica,
  type ReplicatedVolumeReplicaSpec,
  ReplicatedVolumeReplicaStatus,
} from '../api/replicated-volume-replica.ts';
import { metaDiskPath, type StoragePool } from '../api/storage-pool.ts';
import { canonicalJson } from '../runtime/canonical-json.ts';
import { type Clock, systemClock } from '../runtime/clock.ts';
import { Conditions } from '../runtime/conditions.ts';
import type { CacheFactory, ObjectCache } from '../runtime/informer.ts';
import { WorkQueue } from '../runtime/work-queue.ts';
import { type WorkResult, runWorkers } from '../runtime/workers.ts';
import type { AgentApi } from './agent-api.ts';
import { backingFileRemoval, checkDisks, type DiskVerdict, diskClaims, type FileRemoval } from './disk-check.ts';
import type { EngineStatusView } from './engine-client.ts';
import type { VolumeSample } from './metrics.ts';
import { type ConfigStore, type ConsumerPort, type EngineDriver, PlanExecutor } from './executor.ts';
import { FENCE_EXIT, type FenceAction, Fencer } from './fence.ts';
import { checkMountPath, DEFAULT_MOUNT_ROOT, mountClaims } from './mount-path.ts';
import { type PassSnapshot, PLACEHOLDER_SOURCE, type Plan, planPass } from './plan.ts';

export { splitBrainCondition } from './plan.ts';

/** Every replica gets a pass this often, and the agent's Lease is renewed after one that read the engines. */
export const HEARTBEAT_MS = 5_000;
/**
 * An unchanged replica's status is written again this often (lastHeartbeatTime): at rest
 * the agent's liveness is its Lease (renewed every HEARTBEAT_MS), not a status write per
 * replica every few seconds (issue 17 item 6). roles.ts REPORT_STALE_MS is 2.5 of these.
 */
export const REPORT_REFRESH_MS = 60_000;
/** How long a StoragePool read is reused: a grant revoked takes effect within this. */
export const POOL_TTL_MS = 30_000;
/**
 * While the engine is apart from its peer the agent reports every second: a failover
 * acts only on a report of the survivor younger than FAILOVER_EVIDENCE_MS (roles.ts).
 */
export const APART_HEARTBEAT_MS = 1_000;
/** After a pass that acted, the next one comes this soon (it reads what the actions did, and reports it). */
export const ACT_AGAIN_MS = 100;

export interface AgentOptions {
  node: string;
  api: AgentApi;
  engines: EngineDriver;
  config: ConfigStore;
  consumer: ConsumerPort;
  /** The cache of this node's replicas (label tandem.dev/node=NODE). */
  replicas: CacheFactory<KubernetesObject>;
  log: Logger;
  clock?: Clock;
  /** Called with what every pass reads about a replica, keyed namespace/name; undefined when it left (metrics). */
  observe?: (key: string, sample: VolumeSample | undefined) => void;
  workers?: number;
  /** The admin's mount root for spec.mountPath (mount-path.ts); default /mydata. */
  mountRoot?: string;
  /** Peer links over TLS with this node's certificate from its TLS Secret (on in main.ts). */
  peerTls?: boolean;
}

/** What a pass acted on, per replica: reported as observedGeneration, epoch and conditions. */
type Acted = { generation: number; epoch: number; conditions: ConditionInput[] };

export class NodeAgent {
  readonly #o: AgentOptions;
  readonly #clock: Clock;
  readonly #queue: WorkQueue;
  readonly #cache: ObjectCache<KubernetesObject>;
  readonly #executor: PlanExecutor;
  readonly #fencer: Fencer;
  /** Last status written per replica key, when, and the report request it answered. */
  readonly #reported = new Map<string, { json: string; at: number; asked: string | undefined }>();
  /** The newest epoch acted on per replica: an older spec (a stale controller) is never acted on. */
  readonly #epochs = new Map<string, number>();
  readonly #acted = new Map<string, Acted>();
  readonly #pools = new Map<string, { pool: StoragePool | undefined; at: number }>();
  #workers: Promise<void>[] = [];
  #ticker: unknown;
  #stopped = false;

  constructor(o: AgentOptions) {
    this.#o = o;
    this.#clock = o.clock ?? systemClock;
    this.#queue = new WorkQueue({ baseDelayMs: 500, maxDelayMs: 30_000, clock: this.#clock });
    this.#fencer = new Fencer({
      api: o.api,
      node: o.node,
      clock: this.#clock,
      log: o.log.child({ component: 'fence' }),
      onChange: (what, rv, f) =>
        o.api.recordEvent(
          { kind: KINDS.volume.kind, name: rv.metadata.name, namespace: rv.metadata.namespace, uid: rv.metadata.uid },
          what === 'fenced'
            ? { type: 'Warning', reason: 'Fenced', message: describeFence(f) }
            : {
                type: 'Normal',
                reason: 'Unfenced',
                message: `${f.node} is UpToDate again; ${o.node} lifted its fence`,
              },
        ),
    });
    this.#executor = new PlanExecutor({
      node: o.node,
      api: o.api,
      engines: o.engines,
      config: o.config,
      consumer: o.consumer,
      fencer: this.#fencer,
      clock: this.#clock,
      peerTls: o.peerTls ?? false,
    });
    this.#cache = o.replicas({
      onChange: (r) => this.#queue.add(`${r.metadata?.namespace}/${r.metadata?.name}`),
      onResync: () => this.#enqueueAll(),
    });
  }

  get synced(): boolean {
    return this.#cache.synced;
  }

  async start(): Promise<void> {
    await this.#cache.start();
    this.#workers = runWorkers({
      queue: this.#queue,
      count: this.#o.workers ?? 2,
      log: this.#o.log,
      keyField: 'rvr',
      handle: (key) => (key === ORPHANS ? this.#downOrphans() : key === LEASE ? this.#renewLease() : this.#sync(key)),
    });
    this.#enqueueAll();
    const tick = () => {
      if (this.#stopped) return;
      this.#enqueueAll();
      this.#ticker = this.#clock.setTimer(tick, HEARTBEAT_MS);
    };
    this.#ticker = this.#clock.setTimer(tick, HEARTBEAT_MS);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clock.clearTimer(this.#ticker);
    this.#queue.shutDown();
    await Promise.race([
      Promise.all(this.#workers),
      new Promise((r) => this.#clock.setTimer(() => r(undefined), 10_000)),
    ]);
    await this.#cache.stop();
  }

  /** An engine's handler asks (fence-peer, unfence-peer, split-brain); the answer is its exit code. */
  async handle(resource: string, action: FenceAction): Promise<number> {
    const rvr = this.#replicaOf(resource);
    if (action === 'fence') {
      if (!rvr) {
        this.#o.log.error(
          { resource },
          'Fence request for a resource no replica of this node names; the engine stays frozen',
        );
        return FENCE_EXIT.unreachable;
      }
      this.#queue.add(keyOf(rvr));
      if (rvr.spec.role !== 'Primary') return FENCE_EXIT.superseded;
      return FENCE_EXIT[await this.#fencer.fencePeer(rvr.metadata.namespace, rvr.spec)];
    }
    if (action === 'unfence') {
      // The Primary's engine is Connected with an UpToDate peer again.
      if (rvr?.spec.role === 'Primary') await this.#executor.liftPeerFence(rvr.metadata.namespace, rvr.spec);
      return 0;
    }
    // split-brain: the engine has just refused a connection. Look at the replica now
    // (the rejoin step reconnects), and once more a moment later, when it is surely StandAlone.
    if (!rvr) return 1;
    this.#queue.add(keyOf(rvr));
    this.#queue.addAfter(keyOf(rvr), 1000);
    return 0;
  }

  /** This node's replica of an engine's resource, from the cache. */
  #replicaOf(resource: string): ReplicatedVolumeReplica | undefined {
    const raw = this.#cache.list().find((r) => (r as { spec?: { resource?: string } }).spec?.resource === resource);
    const parsed = raw ? ReplicatedVolumeReplica.safeParse(raw) : undefined;
    return parsed?.success && parsed.data.spec.node === this.#o.node ? parsed.data : undefined;
  }

  #enqueueAll(): void {
    for (const r of this.#cache.list()) this.#queue.add(`${r.metadata?.namespace}/${r.metadata?.name}`);
    this.#queue.add(ORPHANS);
    this.#queue.add(LEASE);
  }

  /**
   * The agent's sign of life: its Lease, renewed from the work loop once the engine host
   * has answered (a hung loop or engine host stops it, and the controller sees silence).
   */
  async #renewLease(): Promise<WorkResult> {
    await this.#o.engines.resources();
    await this.#o.api.renewLease(this.#clock.now());
    return undefined;
  }

  async #sync(key: string): Promise<WorkResult> {
    const [namespace, name] = key.split('/') as [string, string];
    const raw = this.#cache.get(name, namespace);
    if (!raw) {
      this.#o.observe?.(key, undefined);
      return undefined;
    }
    const parsed = ReplicatedVolumeReplica.safeParse(raw);
    if (!parsed.success) {
      this.#o.log.error({ rvr: key, error: parsed.error.message }, 'Replica spec does not parse; ignoring it');
      return undefined;
    }
    // A mount path this node may not use is planned and acted on as absent (mount-path.ts).
    const mountRefusal = parsed.data.spec.mountPath
      ? checkMountPath({
          rootTemplate: this.#o.mountRoot ?? DEFAULT_MOUNT_ROOT,
          namespace,
          me: mountClaims([raw])[0]!,
          others: mountClaims(this.#cache.list()),
        })
      : undefined;
    const rvr = mountRefusal ? withoutMount(parsed.data) : parsed.data;
    const spec = rvr.spec;
    if (spec.node !== this.#o.node) {
      this.#o.observe?.(key, undefined);
      return undefined;
    }
    const log = this.#o.log.child({ rvr: key, resource: spec.resource });

    // --- read: everything the plan may use, the engine's status exactly once ---
    const engine = await this.#o.engines.status(spec.resource);
    this.#o.observe?.(key, {
      namespace,
      volume: spec.volume,
      peer: spec.peer.node,
      epoch: this.#epochs.get(key) ?? 0,
      engine,
    });
    // The checks before anything is touched (disk-check.ts); none for an engine being taken down.
    const disks =
      spec.engine === 'Down' ? { kind: 'ok' as const } : await this.#checkDisks(raw, namespace, spec, engine);
    const snapshot: PassSnapshot = {
      spec,
      epochSeen: this.#epochs.get(key) ?? 0,
      engine,
      missingDisks: disks.kind === 'missing' ? disks.paths : [],
      diskRefusal: disks.kind === 'refused' ? { reason: disks.reason, message: disks.message } : undefined,
      createFile: disks.kind === 'create-file' ? { path: disks.path, bytes: disks.bytes } : undefined,
      poolFile: disks.kind === 'ok' ? disks.poolFile : undefined,
      removal: spec.engine === 'Down' ? await this.#removal(namespace, spec) : undefined,
      mountSource: await this.#o.consumer.source(spec.mountPath),
      mountRefusal,
    };

    // --- plan ---
    let plan: Plan = planPass(snapshot);
    if (plan.needVolume) {
      const rv = await this.#fencer.readVolume(namespace, spec.volume);
      plan = planPass({ ...snapshot, volume: rv?.status ?? {} });
    }
    if (plan.ignored) {
      log.warn({ epoch: spec.epoch, seen: snapshot.epochSeen }, 'Ignoring a replica spec from an older epoch');
      await this.#report(key, rvr, snapshot, log, false);
      return undefined;
    }

    // --- act ---
    this.#epochs.set(key, spec.epoch);
    const before = this.#acted.get(key);
    const outcome = await this.#executor.run(rvr, plan, log);
    const acted: Acted = {
      generation: rvr.metadata.generation ?? 0,
      epoch: spec.epoch,
      conditions: outcome.conditions,
    };
    this.#acted.set(key, acted);
    if (outcome.acted) {
      // What was read is no longer the truth: the next pass reads again and reports.
      await this.#report(key, rvr, snapshot, log, true, before);
      return { requeueAfterMs: ACT_AGAIN_MS };
    }

    // --- report: nothing moved, what was read is still the truth ---
    await this.#report(key, rvr, snapshot, log, false);
    return apart(snapshot) ? { requeueAfterMs: APART_HEARTBEAT_MS } : undefined;
  }

  /** The replica's disk and meta-disk against its pool's grant on this node and what is really there. */
  async #checkDisks(
    raw: KubernetesObject,
    namespace: string,
    spec: ReplicatedVolumeReplicaSpec,
    engine: EngineStatusView | undefined,
  ): Promise<DiskVerdict> {
    const pool = await this.#pool(spec.pool);
    const meta = metaDiskPath(spec.self.metaDisk);
    return checkDisks({
      node: this.#o.node,
      namespace,
      volume: spec.volume,
      pool: spec.pool,
      poolFound: pool !== undefined,
      grant: pool?.spec.nodes.find((g) => g.node === this.#o.node),
      disk: spec.self.disk,
      metaDisk: spec.self.metaDisk,
      facts: await this.#o.consumer.diskFacts([spec.self.disk, ...(meta ? [meta] : [])], {
        engineRunning: engine !== undefined,
      }),
      me: diskClaims([raw])[0]!,
      others: diskClaims(this.#cache.list()),
      sizeBytes: spec.sizeBytes,
    });
  }

  /** A deleted replica's pool file to remove, or why its disk stays (disk-check.ts). */
  async #removal(namespace: string, spec: ReplicatedVolumeReplicaSpec): Promise<FileRemoval> {
    const pool = await this.#pool(spec.pool);
    return backingFileRemoval({
      namespace,
      volume: spec.volume,
      pool: spec.pool,
      poolFound: pool !== undefined,
      grant: pool?.spec.nodes.find((g) => g.node === this.#o.node),
      disk: spec.self.disk,
    });
  }

  /** A StoragePool, read at most every POOL_TTL_MS (passes run every few seconds). */
  async #pool(name: string): Promise<StoragePool | undefined> {
    const now = this.#clock.now().getTime();
    const cached = this.#pools.get(name);
    if (cached && now - cached.at < POOL_TTL_MS) return cached.pool;
    const pool = await this.#o.api.readPool(name);
    this.#pools.set(name, { pool, at: now });
    return pool;
  }

  /**
   * The replica's status: the engine as read, and the generation, epoch and conditions
   * of the last plan carried out. After acting, only a heartbeat that is overdue is
   * written (from the read before acting, under the previous acted generation).
   */
  async #report(
    key: string,
    rvr: ReplicatedVolumeReplica,
    snap: PassSnapshot,
    log: Logger,
    afterActing: boolean,
    before?: Acted,
  ): Promise<void> {
    const now = this.#clock.now();
    const last = this.#reported.get(key);
    if (afterActing && last && now.getTime() - last.at < REPORT_REFRESH_MS) return;
    // The controller asks for a report (a switch waits on one): answer each request once.
    const asked = rvr.metadata.annotations?.[ANNOTATIONS.reportRequested];
    const acted: Acted = (afterActing ? before : this.#acted.get(key)) ?? {
      generation: rvr.status?.observedGeneration ?? 0,
      epoch: rvr.status?.epoch ?? 0,
      conditions: [],
    };
    const conditions = new Conditions(rvr.status?.conditions, acted.generation, now);
    for (const c of acted.conditions) conditions.set(c);
    const e = snap.engine;
    const status: ReplicatedVolumeReplicaStatus = {
      role: e?.role ?? 'Unconfigured',
      ...(e
        ? {
            peerRole: e.peerRole,
            connectionState: e.cstate,
            diskState: e.disk,
            peerDiskState: e.peerDisk,
            ...(e.sync ? { syncProgress: e.sync.percent } : {}),
            outOfSyncBytes: e.oosBytes,
            sizeBytes: e.size,
            ...(e.capacity !== undefined ? { capacityBytes: e.capacity } : {}),
            currentUuid: e.uuids.current,
            counters: e.counters,
          }
        : {}),
      epoch: acted.epoch,
      mounted: snap.mountSource !== undefined && snap.mountSource !== PLACEHOLDER_SOURCE,
      conditions: conditions.list,
      observedGeneration: acted.generation,
    };
    // Counters move with every write; they alone do not make a report due before the refresh.
    const json = canonicalJson({ ...status, counters: undefined });
    const every = apart(snap) ? APART_HEARTBEAT_MS : REPORT_REFRESH_MS;
    const requested = asked !== undefined && asked !== last?.asked;
    if (last && last.json === json && !requested && now.getTime() - last.at < every - Math.min(500, every / 4)) return;
    // A merge patch keeps fields it does not name: name every field, null for "gone".
    const body: Record<string, unknown> = Object.fromEntries(
      Object.keys(ReplicatedVolumeReplicaStatus.shape).map((k) => [k, null]),
    );
    // Milliseconds: the controller compares heartbeat ages with thresholds of a few seconds.
    Object.assign(body, status, { lastHeartbeatTime: now.toISOString() });
    if (await this.#o.api.reportStatus(rvr.metadata.namespace, rvr.metadata.name, body)) {
      if (last?.json !== json)
        log.debug({ role: status.role, cstate: status.connectionState, disk: status.diskState }, 'Reported status');
      this.#reported.set(key, { json, at: now.getTime(), asked });
    }
  }

  /** Engines of this node that no replica names any more: their volume is gone. */
  async #downOrphans(): Promise<WorkResult> {
    if (!this.#cache.synced) return undefined;
    const wanted = new Set(this.#cache.list().map((r) => (r as { spec?: { resource?: string } }).spec?.resource));
    for (const res of await this.#o.engines.resources()) {
      if (wanted.has(res) || !(await this.#o.engines.status(res))) continue;
      this.#o.log.info({ resource: res }, 'Taking down an engine no replica names');
      await this.#o.engines.adm(res, 'down');
    }
    return undefined;
  }
}

const TOGETHER = new Set(['Connected', 'SyncSource', 'SyncTarget', 'PausedSyncS', 'PausedSyncT', 'VerifyS', 'VerifyT']);

/** A running engine of a started volume that is not with its peer. */
function apart(s: PassSnapshot): boolean {
  return s.spec.engine === 'Up' && s.engine !== undefined && !TOGETHER.has(s.engine.cstate);
}

const ORPHANS = '*orphans*';
const LEASE = '*lease*';

function withoutMount(r: ReplicatedVolumeReplica): ReplicatedVolumeReplica {
  const { mountPath: _m, filesystem: _f, ...spec } = r.spec;
  return { ...r, spec };
}

function keyOf(r: ReplicatedVolumeReplica): string {
  return `${r.metadata.namespace}/${r.metadata.name}`;
}
