// The agent's checks before it touches a disk: one table, one row per refusal.
import { constants } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PoolNodeGrant } from '../api/storage-pool.ts';
import { realStorage } from '../replication/real-world.ts';
import { internalFileBytesFor, locateMetadata } from '../replication/metadata.ts';
import { Consumer } from './consumer.ts';
import {
  backingFileBytes,
  backingFileRemoval,
  checkDisks,
  type DiskCheckInput,
  type DiskClaim,
  type DiskVerdict,
  type FileRemoval,
  gatherDiskFacts,
  type PathFacts,
  removableInPool,
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
    // At least the exact size a grow to `size` makes (one rule, metadata.ts internalFileBytes; room to spare).
    expect(bytes).toBeGreaterThanOrEqual(internalFileBytesFor(size));
    expect(bytes - size).toBeLessThan(size / 16 + (4 << 20));
  }
});

// Deleting a volume: only this volume's own file in its pool's directory is removed.
test.each<[string, { disk: string; poolFound?: boolean; grant?: PoolNodeGrant | undefined }, FileRemoval['kind']]>([
  ["the volume's own pool file", { disk: '/var/lib/tandem/pools/p/ns.db.img' }, 'remove'],
  ['a granted device: its data stays', { disk: '/dev/sdb1' }, 'none'],
  ["another volume's pool file", { disk: '/var/lib/tandem/pools/p/ns.other.img' }, 'keep'],
  ["the same name in another namespace's file", { disk: '/var/lib/tandem/pools/p/ns2.db.img' }, 'keep'],
  ['a host file', { disk: '/etc/shadow' }, 'keep'],
  ['a climb out of the pool', { disk: '/var/lib/tandem/pools/p/../../../../etc/ns.db.img' }, 'keep'],
  ['the pool is gone', { disk: '/var/lib/tandem/pools/p/ns.db.img', poolFound: false }, 'keep'],
  ['no grant on this node', { disk: '/var/lib/tandem/pools/p/ns.db.img', grant: undefined }, 'keep'],
  [
    'a pool whose directory is not canonical',
    {
      disk: '/var/lib/tandem/pools/p/../ns.db.img',
      grant: { node: 'master', directory: '/var/lib/tandem/pools/p/..' },
    },
    'keep',
  ],
])('backingFileRemoval: %s', (_what, o, kind) => {
  const r = backingFileRemoval({
    namespace: 'ns',
    volume: 'db',
    pool: 'p',
    poolFound: o.poolFound ?? true,
    grant: 'grant' in o ? o.grant : grant,
    disk: o.disk,
  });
  expect(r.kind).toBe(kind);
  if (r.kind === 'remove') expect(r).toEqual({ kind: 'remove', path: o.disk, directory: '/var/lib/tandem/pools/p' });
});

test.each<[string, string, string, string, boolean]>([
  ['the file directly in the directory', '/pool/ns.db.img', '/pool', 'ns.db.img', true],
  ['the root as the pool', '/ns.db.img', '/', 'ns.db.img', true],
  ['resolved elsewhere (a symlinked file or directory)', '/etc/ns.db.img', '/pool', 'ns.db.img', false],
  ['a subdirectory of the pool', '/pool/sub/ns.db.img', '/pool', 'ns.db.img', false],
  ['a prefix that is not the directory', '/pool2/ns.db.img', '/pool', 'ns.db.img', false],
  ['another name than the one asked', '/pool/ns.other.img', '/pool', 'ns.db.img', false],
  ['the directory itself', '/pool', '/pool', '', false],
  ['a relative directory', 'pool/ns.db.img', 'pool', 'ns.db.img', false],
])('removableInPool: %s', (_what, file, dir, name, ok) => {
  expect(removableInPool(file, dir, name)).toBe(ok);
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
    const md = await locateMetadata(realStorage, path, { kind: 'internal' });
    expect(md.dataCapacity).toBeGreaterThanOrEqual(size);
    // Sparse: nothing allocated yet.
    expect((await stat(path)).blocks).toBe(0);
  });

  describe('removeBackingFile', () => {
    const consumer = new Consumer();

    test("removes the pool's own regular file; a second call finds it absent", async () => {
      const pool = join(dir, 'pool');
      await mkdir(pool);
      const file = join(pool, 'ns.db.img');
      await writeFile(file, 'data');
      expect(await consumer.removeBackingFile(file, pool)).toBe('removed');
      expect(await stat(file).catch(() => 'gone')).toBe('gone');
      expect(await consumer.removeBackingFile(file, pool)).toBe('absent');
    });

    test('a symlink in the pool is refused and neither it nor its target is removed', async () => {
      const pool = join(dir, 'pool');
      await mkdir(pool);
      const victim = join(dir, 'victim');
      await writeFile(victim, 'host data');
      await symlink(victim, join(pool, 'ns.db.img'));
      await expect(consumer.removeBackingFile(join(pool, 'ns.db.img'), pool)).rejects.toMatchObject({
        reason: 'NotInPool',
      });
      expect(await readFile(victim, 'utf8')).toBe('host data');
      expect((await lstat(join(pool, 'ns.db.img'))).isSymbolicLink()).toBe(true);
    });

    test('a path through a symlinked directory that resolves outside the pool is refused', async () => {
      const pool = join(dir, 'pool');
      const elsewhere = join(dir, 'elsewhere');
      await mkdir(pool);
      await mkdir(elsewhere);
      await writeFile(join(elsewhere, 'ns.db.img'), 'host data');
      await symlink(elsewhere, join(pool, 'sub'));
      await expect(consumer.removeBackingFile(join(pool, 'sub', 'ns.db.img'), pool)).rejects.toMatchObject({
        reason: 'NotInPool',
      });
      expect(await readFile(join(elsewhere, 'ns.db.img'), 'utf8')).toBe('host data');
    });

    test('a pool directory that is itself a symlink works: both sides are resolved', async () => {
      const real = join(dir, 'real');
      await mkdir(real);
      await symlink(real, join(dir, 'pool'));
      await writeFile(join(real, 'ns.db.img'), 'data');
      expect(await consumer.removeBackingFile(join(dir, 'pool', 'ns.db.img'), join(dir, 'pool'))).toBe('removed');
      expect(await stat(join(real, 'ns.db.img')).catch(() => 'gone')).toBe('gone');
    });
  });
});
