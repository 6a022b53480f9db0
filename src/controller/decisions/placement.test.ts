// Placement from the volume's StoragePool: a user names only what an administrator granted.
import type { ReplicaPlacement } from '../../api/replicated-volume.ts';
import type { FileClaim, StoragePoolSpec } from '../../api/storage-pool.ts';
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

describe('a pool directory with a capacity (issue 15: a tenant cannot fill a node)', () => {
  const GiB = 2 ** 30;
  const pool: StoragePoolSpec = {
    nodes: ['master', 'backup'].map((n) => ({ node: n, directory: '/var/lib/tandem/pools/fast', capacity: '10Gi' })),
  };
  const claim = (key: string, gib: number, created: string, placed: boolean, on = ['master', 'backup']): FileClaim => ({
    key,
    pool: 'tutorial',
    nodes: on,
    bytes: gib * GiB,
    created,
    placed,
  });
  const me = claim('shop/db', 4, '2026-12-07T08:00:00.000Z', false);
  const place = (others: FileClaim[], self = me) =>
    decidePlacement(
      [r('master'), r('backup')],
      nodes,
      false,
      { ...volume, files: { self, all: [self, ...others] } },
      pool,
    );

  test.each<[string, FileClaim[], string]>([
    ['an empty pool', [], 'ok'],
    ['placed volumes leave exactly enough', [claim('a/x', 6, '2026-12-07T09:00:00.000Z', true)], 'ok'],
    [
      'placed volumes hold their space whatever their age',
      [claim('a/x', 7, '2026-12-07T09:00:00.000Z', true)],
      'PoolFull: StoragePool tutorial has 3.0 GiB of its capacity 10Gi left for file-backed volumes on node master; this volume needs 4.0 GiB',
    ],
    [
      'an older volume not yet placed comes first',
      [claim('a/old', 7, '2026-12-07T07:00:00.000Z', false)],
      'PoolFull: StoragePool tutorial has 3.0 GiB',
    ],
    ['a newer one waits for this one', [claim('a/new', 7, '2026-12-07T09:00:00.000Z', false)], 'ok'],
    [
      'an older volume that does not fit itself takes nothing',
      [claim('a/huge', 11, '2026-12-07T07:00:00.000Z', false)],
      'ok',
    ],
    ['same creation time: the key decides', [claim('shop/da', 7, me.created, false)], 'PoolFull'],
    ['another pool', [{ ...claim('a/x', 10, '2026-12-07T07:00:00.000Z', true), pool: 'other' }], 'ok'],
    [
      'a volume with its file on the other node only',
      [claim('a/x', 7, '2026-12-07T07:00:00.000Z', true, ['backup'])],
      'PoolFull: StoragePool tutorial has 3.0 GiB of its capacity 10Gi left for file-backed volumes on node backup',
    ],
  ])('%s', (_what, others, want) => {
    const p = place(others);
    if (want === 'ok') expect(p.ok).toBe(true);
    else {
      const [reason, message] = want.split(': ');
      expect(p).toMatchObject({ ok: false, reason, ...(message ? { message: expect.stringContaining(message) } : {}) });
    }
  });

  test('bigger than the whole capacity: refused even alone', () => {
    expect(place([], claim('shop/db', 11, me.created, false))).toMatchObject({ ok: false, reason: 'PoolFull' });
  });

  test('a volume that already has replicas is never checked (its files exist)', () => {
    const p = decidePlacement([r('master'), r('backup')], nodes, true, volume, pool);
    expect(p.ok).toBe(true);
  });
});
