// StoragePool (tandem.dev/v1alpha1, cluster-scoped, short name sp): where tandem
// may store data, defined by an administrator (issue 15 item 1, LINSTOR's and
// Longhorn's model). Per node: the block devices tandem may use as a volume's disk
// or meta-disk, exactly as named, and/or a directory in which the agent creates a
// sparse backing file per volume. A ReplicatedVolume names a pool; a path no pool
// grants on that node is refused by the controller (Placed=False) and again by the
// agent before it opens anything (disk-check.ts).
import { z } from 'zod';
import { DevicePath, NodeName } from './replicated-volume.ts';

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
  })
  .meta({
    'x-kubernetes-validations': [
      cel('has(self.devices) || has(self.directory)', 'a node grant needs devices, a directory or both'),
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
