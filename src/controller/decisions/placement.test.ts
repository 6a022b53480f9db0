// Placement from the volume's StoragePool: a user names only what an administrator granted.
import type { ReplicaPlacement } from '../../api/replicated-volume.ts';
import type { StoragePoolSpec } from '../../api/storage-pool.ts';
import { decidePlacement, type NodeView } from './placement.ts';

const node = (name: string, o: Partial<NodeView> = {}): [string, NodeView] => [
  name,
  { name, ready: true, unschedulable: false, internalIP: `10.0.0.${name.length}`, ...o },
];
const nodes = new Map([node('master'), node('backup')]);
const volume = { namespace: 'shop', name: 'db', pool: 'tutorial' };
const tutorial: StoragePoolSpec = {
  nodes: [
    { node: 'master', devices: ['/dev/sdb1', '/dev/sdb2'] },
    { node: 'backup', devices: ['/dev/sdb1', '/dev/sdb2'], directory: '/var/lib/tandem/pools/fast' },
  ],
};
const r = (node: string, disk?: string, metaDisk = 'internal'): ReplicaPlacement => ({
  node,
  ...(disk !== undefined ? { disk } : {}),
  metaDisk,
});

test.each<[string, ReplicaPlacement[], StoragePoolSpec | undefined, string]>([
  [
    'the tutorial: granted disks and indexed meta-disks',
    [r('master', '/dev/sdb1', '/dev/sdb2[0]'), r('backup', '/dev/sdb1', '/dev/sdb2[0]')],
    tutorial,
    'ok',
  ],
  [
    'no such pool',
    [r('master', '/dev/sdb1'), r('backup', '/dev/sdb1')],
    undefined,
    'PoolNotFound: StoragePool tutorial does not exist',
  ],
  [
    'a device the pool does not grant (the host disk)',
    [r('master', '/dev/sda'), r('backup', '/dev/sdb1')],
    tutorial,
    'NotGranted: StoragePool tutorial does not grant /dev/sda on node master',
  ],
  [
    'another name for a granted device is not the grant',
    [r('master', '/dev/disk/by-id/x'), r('backup', '/dev/sdb1')],
    tutorial,
    'NotGranted',
  ],
  [
    'a meta-disk the pool does not grant',
    [r('master', '/dev/sdb1', '/dev/sdc[0]'), r('backup', '/dev/sdb1')],
    tutorial,
    'NotGranted: StoragePool tutorial does not grant the meta-disk /dev/sdc on node master',
  ],
  [
    'the meta-disk is the disk',
    [r('master', '/dev/sdb1', '/dev/sdb1[0]'), r('backup', '/dev/sdb1')],
    tutorial,
    'SameDevice',
  ],
  [
    'a node the pool does not cover',
    [r('master', '/dev/sdb1'), r('other', '/dev/sdb1')],
    { nodes: [tutorial.nodes[0]!] },
    'NodeNotFound',
  ],
  [
    'a file-backed replica on a node with no pool directory',
    [r('master'), r('backup')],
    tutorial,
    'NotGranted: StoragePool tutorial has no directory for file-backed volumes on node master',
  ],
  [
    "naming a pool file explicitly (another volume's) is refused",
    [r('master', '/dev/sdb1'), r('backup', '/var/lib/tandem/pools/fast/other.vol.img')],
    tutorial,
    'NotGranted',
  ],
  [
    "naming its own pool file explicitly is refused too: files are the controller's to place",
    [r('master', '/dev/sdb1'), r('backup', '/var/lib/tandem/pools/fast/shop.db.img')],
    tutorial,
    'NotGranted',
  ],
  [
    'a grant on one node does not carry to another',
    [r('master', '/dev/sdb1'), r('backup', '/dev/sdb1')],
    { nodes: [tutorial.nodes[0]!] },
    'NotGranted: StoragePool tutorial grants nothing on node backup',
  ],
])('%s', (_what, replicas, pool, want) => {
  const p = decidePlacement(replicas, nodes, false, volume, pool);
  if (want === 'ok') expect(p.ok).toBe(true);
  else {
    const [reason, message] = want.split(': ');
    expect(p).toMatchObject({ ok: false, reason, ...(message ? { message: expect.stringContaining(message) } : {}) });
  }
});

test('a file-backed replica gets its own file in the pool directory, internal metadata', () => {
  const p = decidePlacement([r('master', '/dev/sdb1', '/dev/sdb2[1]'), r('backup')], nodes, false, volume, tutorial);
  expect(p).toEqual({
    ok: true,
    replicas: [
      { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[1]', address: '10.0.0.6' },
      { node: 'backup', disk: '/var/lib/tandem/pools/fast/shop.db.img', metaDisk: 'internal', address: '10.0.0.6' },
    ],
  });
});
