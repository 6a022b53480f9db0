// Volume expansion, decided before anything is written (the model is requests.ts:
// validate first, one table of refusals). Pure functions over a snapshot of the
// volume, table-tested in expansion.test.ts.
//
// Expansion is OFFLINE (identity: VolumeExpansion OFFLINE). The replicated device
// grows at any time: spec.size goes up, each node's agent grows its pool file, one
// engine runs `resize` and the new area is synced. But the Primary's kernel block
// device (nbdfuse + losetup here, the kernel nbd driver elsewhere) keeps the size it
// had when it was attached: neither a loop device over a FUSE file nor an nbd-client
// connection learns that the export grew. Only detaching and attaching it again
// (`tandemadm reattach`) shows the new size, and that needs the device closed, i.e.
// unmounted. So:
//
//   ControllerExpandVolume  refused while the volume is published (FAILED_PRECONDITION,
//                           CSI's "Volume in use": external-resizer waits until no pod
//                           uses the claim and tries again); otherwise spec.size grows
//                           and the call returns once every replica's engine has grown.
//   NodeStageVolume         a kernel device smaller than the engine's device is
//                           re-attached before it is mounted.
//   NodeExpandVolume        the filesystem grows online to the (re-attached) device.
import { status } from '@grpc/grpc-js';
import { formatBytes } from '../api/quantity.ts';
import { CsiError, invalid, precondition } from './errors.ts';
import { SIZE_ALIGN } from './requests.ts';

export type CapacityRange = { required_bytes?: number; limit_bytes?: number } | null | undefined;

/** A file-backed replica's node under a pool directory with a capacity. */
export type PoolRoom = {
  node: string;
  /** The grant's capacity on the node. */
  capacity: number;
  /** What the pool's other volumes take of it there (poolUsed without this volume). */
  usedByOthers: number;
};

/** A replica on a disk of its own (not a pool file): its engine says how much the disk holds. */
export type DiskRoom = { node: string; disk: string; capacityBytes: number | undefined };

export type ExpansionSnapshot = {
  /** volume_id, for messages. */
  id: string;
  /** spec.size in bytes. */
  currentBytes: number;
  range: CapacityRange;
  /** The node the volume is published on (PUBLISHED_ANNOTATION), if any. */
  publishedOn: string | undefined;
  deleting: boolean;
  pools: readonly PoolRoom[];
  disks: readonly DiskRoom[];
};

/** What ControllerExpandVolume does: the size to answer, and whether spec.size must be patched to it first. */
export type ExpansionDecision = { bytes: number; patch: boolean };

/**
 * The size capacity_range asks for: required_bytes rounded up to a whole MiB (as
 * CreateVolume's decideSize), never above limit_bytes. Required: an expansion that
 * names no size asks for nothing (INVALID_ARGUMENT).
 */
export function expansionTarget(range: CapacityRange): number {
  if (!range) throw invalid('capacity_range is required');
  const required = Number(range.required_bytes ?? 0);
  const limit = Number(range.limit_bytes ?? 0);
  if (required < 0 || limit < 0) throw invalid('capacity_range: bytes must not be negative');
  if (required === 0) throw invalid('capacity_range: required_bytes is required to expand a volume');
  if (limit > 0 && required > limit)
    throw new CsiError(status.OUT_OF_RANGE, `capacity_range: required_bytes ${required} > limit_bytes ${limit}`);
  const size = Math.ceil(required / SIZE_ALIGN) * SIZE_ALIGN;
  if (limit > 0 && size > limit)
    throw new CsiError(
      status.OUT_OF_RANGE,
      `capacity_range: no whole MiB between required_bytes ${required} and limit_bytes ${limit}`,
    );
  if (!Number.isSafeInteger(size)) throw new CsiError(status.OUT_OF_RANGE, `capacity_range: ${required} bytes`);
  return size;
}

/**
 * ControllerExpandVolume's decision. A request at or below the current size answers
 * with the current size and changes nothing (CSI: "already larger than or equal to
 * the target capacity … SHOULD reply 0 OK"); a retry after spec.size grew is such a
 * request. A growth is refused while published (OFFLINE), when it can never fit
 * (OUT_OF_RANGE: a pool capacity or a disk smaller than the new size) and when it
 * does not fit now (RESOURCE_EXHAUSTED: the pool's other volumes hold the room,
 * which deleting one gives back).
 */
export function decideExpansion(s: ExpansionSnapshot): ExpansionDecision {
  const want = expansionTarget(s.range);
  // Compared before rounding: a volume of 10^9 bytes asked for 10^9 is as large as asked.
  if (Number(s.range?.required_bytes) <= s.currentBytes) return { bytes: s.currentBytes, patch: false };
  if (s.deleting) throw precondition(`volume ${s.id} is being deleted`);
  if (s.publishedOn)
    throw precondition(
      `volume ${s.id} is published on node ${s.publishedOn}: tandem expands volumes offline (its kernel block device only shows a new size when it is attached again, which needs it unmounted); stop the workload and expansion continues`,
    );
  const growth = want - s.currentBytes;
  for (const p of s.pools) {
    if (want > p.capacity)
      throw new CsiError(
        status.OUT_OF_RANGE,
        `volume ${s.id}: ${formatBytes(want)} is more than the pool's capacity on node ${p.node} (${formatBytes(p.capacity)})`,
      );
    if (p.usedByOthers + want > p.capacity)
      throw new CsiError(
        status.RESOURCE_EXHAUSTED,
        `volume ${s.id}: growing by ${formatBytes(growth)} does not fit the pool on node ${p.node} (${formatBytes(p.capacity - p.usedByOthers - s.currentBytes)} left of ${formatBytes(p.capacity)})`,
      );
  }
  for (const d of s.disks)
    if (d.capacityBytes !== undefined && want > d.capacityBytes)
      throw new CsiError(
        status.OUT_OF_RANGE,
        `volume ${s.id}: disk ${d.disk} on node ${d.node} holds ${formatBytes(d.capacityBytes)}, not ${formatBytes(want)} (grow the disk first)`,
      );
  return { bytes: want, patch: true };
}

export type ReplicaSize = { node: string; sizeBytes?: number | undefined };

/**
 * Whether every replica's engine has grown to `bytes`, or which have not: the nodes of
 * spec.replicas, each as the volume's status reports it (a node with no status yet has
 * not grown).
 */
export function growthPending(
  nodes: readonly string[],
  reported: readonly ReplicaSize[] | undefined,
  bytes: number,
): string[] {
  const pending: string[] = [];
  for (const node of nodes) {
    const size = reported?.find((r) => r.node === node)?.sizeBytes;
    if (size === undefined || size < bytes)
      pending.push(`${node} at ${size === undefined ? 'no size yet' : formatBytes(size)}`);
  }
  return pending;
}

/**
 * NodeExpandVolume's check before growing a filesystem: the device must already have
 * the size asked for (required_bytes, else the engine's size). The engine not there
 * yet: ControllerExpandVolume has not finished. The engine there but the kernel device
 * not: it is still the attachment of before the growth, which only a re-attach (at the
 * next NodeStageVolume, with the volume unmounted) changes.
 */
export function checkNodeExpansion(o: {
  id: string;
  device: string;
  requiredBytes: number;
  engineBytes: number;
  deviceBytes: number;
}): void {
  const want = o.requiredBytes > 0 ? o.requiredBytes : o.engineBytes;
  if (o.deviceBytes >= want) return;
  if (o.engineBytes < want)
    throw precondition(
      `volume ${o.id} is ${formatBytes(o.engineBytes)} on this node, not the ${formatBytes(want)} asked for: ControllerExpandVolume has not grown it yet`,
    );
  throw precondition(
    `the kernel device ${o.device} of volume ${o.id} still has ${formatBytes(o.deviceBytes)} (the volume has ${formatBytes(o.engineBytes)}): tandem expands offline, the device shows the new size once the volume is unstaged and staged again`,
  );
}
