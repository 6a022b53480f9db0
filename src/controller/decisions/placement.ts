// Placement: may the volume's replicas live on the nodes it names, on the storage
// its pool grants there? A pure function of the spec, the pool and a snapshot of
// the Nodes; the reconcile writes the answer into the `Placed` condition and
// creates no replica while it is no.
//
// Storage (issue 15): a replica's disk and meta-disk must be devices the volume's
// StoragePool grants on that node, exactly as named; a replica without a disk gets
// its own sparse file in the pool's directory on that node (the agent creates it).
// A user never names a host path no administrator granted.
import type { ReplicaPlacement } from '../../api/replicated-volume.ts';
import { formatBytes, parseQuantity } from '../../api/quantity.ts';
import {
  backingFileName,
  type FileClaim,
  grants,
  metaDiskPath,
  poolUsed,
  type StoragePoolSpec,
} from '../../api/storage-pool.ts';

export type NodeView = {
  name: string;
  ready: boolean;
  /** Since when the Ready condition has its current status (for failover, issue 6). */
  readySince?: Date | undefined;
  unschedulable: boolean;
  internalIP: string | undefined;
};

/** A replica with its storage resolved: the disk is always a path here. */
export type PlacedReplica = { node: string; disk: string; metaDisk: string; address: string };

export const PLACEMENT_FAILURES = [
  'NodeNotFound',
  'NodeUnschedulable',
  'NoInternalIP',
  'PoolNotFound',
  'NotGranted',
  'SameDevice',
  'PoolFull',
] as const;
export type PlacementFailure = (typeof PLACEMENT_FAILURES)[number];

export type Placement =
  | { ok: true; replicas: [PlacedReplica, PlacedReplica] }
  | { ok: false; reason: PlacementFailure; message: string };

/**
 * What placement needs of the volume beyond its replicas. `files`: its own claim and
 * every volume's (storage-pool.ts fileClaimOf), for a pool directory with a capacity;
 * left out for a volume that already has replicas (its files exist: never torn down).
 */
export type VolumeRef = {
  namespace: string;
  name: string;
  pool: string;
  files?: { self: FileClaim; all: readonly FileClaim[] } | undefined;
};

/**
 * Named nodes must exist and have an InternalIP. A cordoned (unschedulable) node
 * is refused only for a volume that has no replicas yet: cordoning must not tear
 * down a running volume. `pool` is the volume's StoragePool spec, undefined when
 * no such pool exists.
 */
export function decidePlacement(
  replicas: readonly ReplicaPlacement[],
  nodes: ReadonlyMap<string, NodeView>,
  existing: boolean,
  volume: VolumeRef,
  pool: StoragePoolSpec | undefined,
): Placement {
  const placed: PlacedReplica[] = [];
  for (const r of replicas) {
    const n = nodes.get(r.node);
    if (!n) return { ok: false, reason: 'NodeNotFound', message: `node ${r.node} does not exist` };
    if (n.unschedulable && !existing)
      return { ok: false, reason: 'NodeUnschedulable', message: `node ${r.node} is cordoned (unschedulable)` };
    if (!n.internalIP)
      return {
        ok: false,
        reason: 'NoInternalIP',
        message: `node ${r.node} has no InternalIP address for the replication link`,
      };
    const storage = placeStorage(r, volume, pool);
    if (!storage.ok) return storage;
    placed.push({ node: r.node, disk: storage.disk, metaDisk: storage.metaDisk, address: n.internalIP });
  }
  return { ok: true, replicas: placed as [PlacedReplica, PlacedReplica] };
}

/** One replica's disk and meta-disk, from its pool's grant on its node. */
export function placeStorage(
  r: ReplicaPlacement,
  volume: VolumeRef,
  pool: StoragePoolSpec | undefined,
): { ok: true; disk: string; metaDisk: string } | { ok: false; reason: PlacementFailure; message: string } {
  if (!pool)
    return {
      ok: false,
      reason: 'PoolNotFound',
      message: `StoragePool ${volume.pool} does not exist (an administrator defines pools: kubectl get storagepools)`,
    };
  const grant = pool.nodes.find((g) => g.node === r.node);
  const own = { namespace: volume.namespace, volume: volume.name };
  const refuse = (message: string) => ({ ok: false as const, reason: 'NotGranted' as const, message });
  if (!grant) return refuse(`StoragePool ${volume.pool} grants nothing on node ${r.node}`);
  let disk: string;
  if (r.disk !== undefined) {
    // Explicit paths must be granted devices: a volume never names a pool file (another volume's).
    if (grants(grant, r.disk, own) !== 'device')
      return refuse(`StoragePool ${volume.pool} does not grant ${r.disk} on node ${r.node}`);
    disk = r.disk;
  } else {
    if (grant.directory === undefined)
      return refuse(
        `StoragePool ${volume.pool} has no directory for file-backed volumes on node ${r.node}; name a granted device as disk`,
      );
    disk = backingFileName(grant.directory, volume.namespace, volume.name);
    const capacity = grant.capacity !== undefined ? parseQuantity(grant.capacity) : undefined;
    const files = volume.files;
    if (capacity !== undefined && files) {
      const used = poolUsed(files.all, volume.pool, r.node, capacity, files.self);
      if (used + files.self.bytes > capacity)
        return {
          ok: false,
          reason: 'PoolFull',
          message: `StoragePool ${volume.pool} has ${formatBytes(capacity - used)} of its capacity ${grant.capacity} left for file-backed volumes on node ${r.node}; this volume needs ${formatBytes(files.self.bytes)} (older volumes are placed first)`,
        };
    }
  }
  const meta = metaDiskPath(r.metaDisk);
  if (meta !== undefined) {
    if (grants(grant, meta, own) !== 'device')
      return refuse(`StoragePool ${volume.pool} does not grant the meta-disk ${meta} on node ${r.node}`);
    if (meta === disk)
      return {
        ok: false,
        reason: 'SameDevice',
        message: `node ${r.node}: the meta-disk ${r.metaDisk} is the disk itself; use internal metadata or another device`,
      };
  }
  return { ok: true, disk, metaDisk: r.metaDisk };
}

/** The lowest free port of the range, or undefined when all are taken. */
export function allocatePort(used: ReadonlySet<number>, range: { first: number; count: number }): number | undefined {
  for (let p = range.first; p < range.first + range.count; p++) if (!used.has(p)) return p;
  return undefined;
}
