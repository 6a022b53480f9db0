// StoragePool (tandem.dev/v1alpha1, cluster-scoped, short name sp): where tandem
// may store data, defined by an administrator (issue 15 item 1, LINSTOR's and
// Longhorn's model). Per node: the block devices tandem may use as a volume's disk
// or meta-disk, exactly as named, and/or a directory in which the agent creates a
// sparse backing file per volume. A ReplicatedVolume names a pool; a path no pool
// grants on that node is refused by the controller (Placed=False) and again by the
// agent before it opens anything (disk-check.ts).
import { z } from 'zod';
import { CONDITIONS } from './names.ts';
import { parseQuantity } from './quantity.ts';
import { DevicePath, NodeName, Quantity } from './replicated-volume.ts';

const cel = (rule: string, message: string) => ({ rule, message });

export const PoolNodeGrant = z
  .object({
    node: NodeName,
    devices: z
      .array(DevicePath)
      .max(256)
      .optional()
      .describe(
        'Block devices (or files) tandem may use on this node as a disk or a meta-disk, exactly as a volume names them, e.g. /dev/sdb1.',
      ),
    directory: DevicePath.optional().describe(
      'A directory on this node for file-backed volumes: the agent creates a sparse file per volume in it. It must be visible to the agent at the same path (the chart mounts /var/lib/tandem/pools).',
    ),
    capacity: Quantity.optional().describe(
      "The most the file-backed volumes in directory may add up to on this node (the sum of their spec.size, what their sparse files may grow to), e.g. 500Gi. A volume that would go over it is not placed (Placed=False, PoolFull) and the CSI driver places it elsewhere or answers RESOURCE_EXHAUSTED. Without it, only the filesystem's free space at creation limits a volume: set it on every pool a namespace user may name, below the filesystem's size to leave room for the host.",
    ),
  })
  .meta({
    'x-kubernetes-validations': [
      cel('has(self.devices) || has(self.directory)', 'a node grant needs devices, a directory or both'),
      cel(
        '!has(self.capacity) || has(self.directory)',
        'capacity limits the directory: a grant with capacity needs one',
      ),
    ],
  });
export type PoolNodeGrant = z.infer<typeof PoolNodeGrant>;

export const StoragePoolSpec = z.object({
  nodes: z
    .array(PoolNodeGrant)
    .min(1)
    .max(1000)
    .refine((nodes) => new Set(nodes.map((g) => g.node)).size === nodes.length, 'each node appears once in a pool')
    // A list keyed by node: the API server refuses a node named twice (cheaper than a CEL rule).
    .meta({ 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['node'] })
    .describe('What tandem may use, per node.'),
});
export type StoragePoolSpec = z.infer<typeof StoragePoolSpec>;

export const StoragePoolStatus = z.object({});

/**
 * A volume's claim on pool directories: its size on every node where it is a file in
 * `pool`'s directory. Placed volumes hold their space; the others are admitted in
 * creation order (poolUsed), so every reconcile and CreateVolume agrees on who fits.
 */
export type FileClaim = {
  key: string;
  pool: string;
  /** Nodes where the volume is a file in the pool's directory (replicas without a disk). */
  nodes: readonly string[];
  bytes: number;
  /** creationTimestamp (RFC 3339, so it sorts as text); ties by key. */
  created: string;
  /** Placed=True: its files exist or are being made; it holds its space whatever the order. */
  placed: boolean;
};

/** What fileClaimOf reads of a volume: the controller's cache and the CSI driver's list both have it. */
export type ClaimSource = {
  metadata: { namespace: string; name: string; creationTimestamp?: Date | string | undefined };
  spec: { pool: string; size?: string | undefined; replicas: readonly { node: string; disk?: string | undefined }[] };
  status?: { conditions?: readonly { type: string; status: string }[] | undefined } | undefined;
};

/** One spelling of a time, so that claims compare as text whatever wrote them ('' when there is none). */
function isoTime(t: Date | string | undefined): string {
  const ms = t === undefined ? Number.NaN : t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isNaN(ms) ? '' : new Date(ms).toISOString();
}

/** The volume's claim on its pool's directories; undefined when it has no file-backed replica. */
export function fileClaimOf(v: ClaimSource): FileClaim | undefined {
  const nodes = v.spec.replicas.filter((r) => r.disk === undefined).map((r) => r.node);
  // A file-backed replica needs spec.size (the CRD refuses one without); nothing to count otherwise.
  const bytes = v.spec.size !== undefined ? parseQuantity(v.spec.size) : undefined;
  if (nodes.length === 0 || bytes === undefined) return undefined;
  return {
    key: `${v.metadata.namespace}/${v.metadata.name}`,
    pool: v.spec.pool,
    nodes,
    bytes,
    created: isoTime(v.metadata.creationTimestamp),
    placed: v.status?.conditions?.some((c) => c.type === CONDITIONS.placed && c.status === 'True') ?? false,
  };
}

/** The claims of those volumes that have one. */
export function fileClaimsOf(volumes: Iterable<ClaimSource>): FileClaim[] {
  const out: FileClaim[] = [];
  for (const v of volumes) {
    const c = fileClaimOf(v);
    if (c) out.push(c);
  }
  return out;
}

/**
 * How much of `capacity` on `node` the claims in `pool` take, counting the placed ones,
 * then the unplaced ones older than `before` (creation order), each only if it fits.
 * With `before` undefined every unplaced claim is walked: what is left for a new volume.
 */
export function poolUsed(
  claims: readonly FileClaim[],
  pool: string,
  node: string,
  capacity: number,
  before?: Pick<FileClaim, 'key' | 'created'>,
): number {
  const here = claims.filter((c) => c.pool === pool && c.nodes.includes(node) && c.key !== before?.key);
  let used = here.filter((c) => c.placed).reduce((sum, c) => sum + c.bytes, 0);
  const older = (c: FileClaim) =>
    !before || c.created < before.created || (c.created === before.created && c.key < before.key);
  const waiting = here
    .filter((c) => !c.placed && older(c))
    .sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : a.key < b.key ? -1 : 1));
  for (const c of waiting) if (used + c.bytes <= capacity) used += c.bytes;
  return used;
}

export const StoragePool = z.object({
  apiVersion: z.string(),
  kind: z.string(),
  metadata: z.object({ name: z.string(), resourceVersion: z.string().optional() }).loose(),
  spec: StoragePoolSpec,
});
export type StoragePool = z.infer<typeof StoragePool>;

/** The backing file of a file-backed replica: one per volume in the pool's directory. */
export function backingFileName(directory: string, namespace: string, volume: string): string {
  return `${directory}/${namespace}.${volume}.img`;
}

/** The path part of a meta-disk (`/dev/sdb2[0]` → `/dev/sdb2`), undefined for `internal`. */
export function metaDiskPath(metaDisk: string): string | undefined {
  return metaDisk === 'internal' ? undefined : metaDisk.replace(/\[\d+\]$/, '');
}

/**
 * How a pool grant allows `path` to the volume `namespace/volume`: one of its devices,
 * or that volume's own backing file in its directory (never another volume's file).
 */
export function grants(
  g: PoolNodeGrant | undefined,
  path: string,
  own: { namespace: string; volume: string },
): 'device' | 'file' | undefined {
  if (!g) return undefined;
  if (g.devices?.includes(path)) return 'device';
  if (g.directory !== undefined && path === backingFileName(g.directory, own.namespace, own.volume)) return 'file';
  return undefined;
}
