// The agent's checks before it touches a disk: one table, one row per refusal.
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PoolNodeGrant } from '../api/storage-pool.ts';
import { locateMetadata } from '../replication/metadata.ts';
import {
  backingFileBytes,
  checkDisks,
  type DiskCheckInput,
  type DiskClaim,
  type DiskVerdict,
  gatherDiskFacts,
  type PathFacts,
} from './disk-check.ts';

const grant: PoolNodeGrant = {
  node: 'master',
  devices: ['/dev/sdb1', '/dev/sdb2', '/dev/disk/by-id/wwn-1'],
  directory: '/var/lib/tandem/pools/p',
};
const block = (id: string, o: Partial<PathFacts> = {}): PathFacts => ({
  kind: 'block',
  id,
  mountedAt: [],
  holders: [],
  ...o,
});
const facts = (entries: [string, PathFacts][]) => new Map(entries);
const standard = facts([
  ['/dev/sdb1', block('8:17')],
  ['/dev/sdb2', block('8:18')],
]);
const older = (key: string, disk: string, metaDisk = 'internal'): DiskClaim => ({
  key,
  created: '2026-01-01T00:00:00Z',
  disk,
  metaDisk,
});
const input = (o: Partial<DiskCheckInput> = {}): DiskCheckInput => ({
  node: 'master',
  namespace: 'shop',
  volume: 'db',
  pool: 'p',
  poolFound: true,
  grant,
  disk: '/dev/sdb1',
  metaDisk: '/dev/sdb2[0]',
  facts: standard,
  me: { key: 'shop/db-master', created: '2026-06-01T00:00:00Z' },
  others: [],
  sizeBytes: 1 << 30,
  ...o,
});
const file = '/var/lib/tandem/pools/p/shop.db.img';

test.each<[string, Partial<DiskCheckInput>, DiskVerdict['kind'] | string]>([
  ['the tutorial disks, granted and unused', {}, 'ok'],
  ['no such pool', { poolFound: false, grant: undefined }, 'PoolNotFound'],
  ['the pool grants nothing on this node', { grant: undefined }, 'NotGranted'],
  ['a disk the pool does not grant (the root disk)', { disk: '/dev/sda1' }, 'NotGranted'],
  ['a meta-disk the pool does not grant', { metaDisk: '/dev/sda2[0]' }, 'NotGranted'],
  ['a climb out of /dev', { disk: '/dev/../etc/shadow' }, 'NotCanonical'],
  ['a trailing slash', { disk: '/dev/sdb1/' }, 'NotCanonical'],
  ["another volume's pool file", { disk: '/var/lib/tandem/pools/p/other.vol.img', metaDisk: 'internal' }, 'NotGranted'],
  ['the meta-disk is the disk', { metaDisk: '/dev/sdb1[0]' }, 'SameDevice'],
  [
    'two names of one device (a by-id symlink to the disk as meta-disk)',
    {
      metaDisk: '/dev/disk/by-id/wwn-1',
      facts: facts([
        ['/dev/sdb1', block('8:17')],
        ['/dev/disk/by-id/wwn-1', { ...block('8:17'), kind: 'symlink', target: { path: '/dev/sdb1', kind: 'block' } }],
      ]),
    },
    'SameDevice',
  ],
  ['an older volume uses the disk', { others: [older('a/x-master', '/dev/sdb1')] }, 'InUse'],
  [
    'an older volume uses the disk as its meta-disk',
    { others: [older('a/x-master', '/dev/sdc', '/dev/sdb1')] },
    'InUse',
  ],
  ['an older volume uses the meta-disk as its disk', { others: [older('a/x-master', '/dev/sdb2')] }, 'InUse'],
  [
    'an older volume has the same meta-disk slot',
    { others: [older('a/x-master', '/dev/sdc', '/dev/sdb2[0]')] },
    'InUse',
  ],
  [
    'an older volume has another slot of the meta-disk: fine',
    { others: [older('a/x-master', '/dev/sdc', '/dev/sdb2[1]')] },
    'ok',
  ],
  [
    'a newer volume claiming the same disk does not block this one',
    { others: [{ ...older('z/z-master', '/dev/sdb1'), created: '2027-01-01T00:00:00Z' }] },
    'ok',
  ],
  [
    'its own claim is not another volume',
    { others: [{ ...older('shop/db-master', '/dev/sdb1'), created: '2026-06-01T00:00:00Z' }] },
    'ok',
  ],
  [
    'the disk is mounted',
    {
      facts: facts([
        ['/dev/sdb1', block('8:17', { mountedAt: ['/boot'] })],
        ['/dev/sdb2', block('8:18')],
      ]),
    },
    'Mounted',
  ],
  [
    'the disk is held by device mapper',
    {
      facts: facts([
        ['/dev/sdb1', block('8:17', { holders: ['dm-0'] })],
        ['/dev/sdb2', block('8:18')],
      ]),
    },
    'InUse',
  ],
  [
    'the disk is open exclusively',
    {
      facts: facts([
        ['/dev/sdb1', block('8:17', { busy: true })],
        ['/dev/sdb2', block('8:18')],
      ]),
    },
    'InUse',
  ],
  [
    'the disk is a directory',
    {
      facts: facts([
        ['/dev/sdb1', { kind: 'other' }],
        ['/dev/sdb2', block('8:18')],
      ]),
    },
    'NotABlockDevice',
  ],
  ['a device that is missing', { facts: facts([['/dev/sdb2', block('8:18')]]) }, 'missing'],
  ['a pool file that is missing: create it', { disk: file, metaDisk: 'internal', facts: facts([]) }, 'create-file'],
  [
    'a pool file that is missing, no size',
    { disk: file, metaDisk: 'internal', facts: facts([]), sizeBytes: undefined },
    'NoSize',
  ],
  [
    'a pool file that exists',
    { disk: file, metaDisk: 'internal', facts: facts([[file, { kind: 'file', id: '1:2' }]]) },
    'ok',
  ],
  [
    'a pool file that is a symlink (to the host disk)',
    {
      disk: file,
      metaDisk: 'internal',
      facts: facts([[file, { kind: 'symlink', target: { path: '/dev/sda', kind: 'block' } }]]),
    },
    'NotCanonical',
  ],
])('%s', (_what, o, want) => {
  const v = checkDisks(input(o));
  expect(v.kind === 'refused' ? v.reason : v.kind).toBe(want);
  if (v.kind === 'refused') expect(v.message.length).toBeGreaterThan(10);
});

test('a new pool file holds the volume and its internal metadata', () => {
  for (const size of [1, 4096, 1 << 20, 512 * 2 ** 20, 10 * 2 ** 30 + 12345]) {
    const bytes = backingFileBytes(size);
    expect(bytes).toBeGreaterThan(size);
    expect(bytes - size).toBeLessThan(size / 16 + (4 << 20));
  }
});

describe('on real files', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tandem-disks-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('gatherDiskFacts: a regular file, a symlink to it, a missing path; nothing is written', async () => {
    await writeFile(join(dir, 'a.img'), 'data');
    await symlink(join(dir, 'a.img'), join(dir, 'link'));
    const before = await stat(join(dir, 'a.img'));
    const f = await gatherDiskFacts([join(dir, 'a.img'), join(dir, 'link'), join(dir, 'none')], {
      engineRunning: false,
    });
    expect(f.get(join(dir, 'a.img'))).toMatchObject({ kind: 'file', id: `${before.dev}:${before.ino}` });
    expect(f.get(join(dir, 'link'))).toMatchObject({
      kind: 'symlink',
      target: { path: join(dir, 'a.img'), kind: 'file' },
    });
    expect(f.get(join(dir, 'none'))).toMatchObject({ kind: 'missing', freeBytes: expect.any(Number) });
    expect(await readFile(join(dir, 'a.img'), 'utf8')).toBe('data');
    expect((await stat(join(dir, 'a.img'))).mtimeMs).toBe(before.mtimeMs);
  });

  test('a file of backingFileBytes(size) has room for size bytes of data after internal metadata', async () => {
    const size = 64 * 2 ** 20;
    const path = join(dir, 'v.img');
    const h = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    await h.truncate(backingFileBytes(size));
    await h.close();
    const storage = { sizeOf: async (p: string) => ({ size: (await stat(p)).size }) };
    const md = await locateMetadata(storage as never, path, { kind: 'internal' });
    expect(md.dataCapacity).toBeGreaterThanOrEqual(size);
    // Sparse: nothing allocated yet.
    expect((await stat(path)).blocks).toBe(0);
  });
});
