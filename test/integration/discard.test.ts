// Issue 15 item 6: space comes back. The export offers TRIM and WRITE_ZEROES (nbdinfo), both
// are mirrored to the peer, and on file-backed disks they punch holes on both nodes (the backing
// files' data extents shrink), while the two disks stay byte-identical. A trim while the peer
// is away becomes out-of-sync bits, and the resync punches the same holes there.
// Real engines (tandemadm), real clients: nbdinfo, fio's nbd engine (--rw=trim), nbdcopy, and
// fstrim on a mounted ext4 and xfs (nbdfuse + loop: the loop device's discards reach the
// export as TRIM).
import { createHash } from 'node:crypto';
import { mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { tool, type NodeName, type Pair } from './support/pair.ts';
import { startTandemExport } from './support/tandem-export.ts';
import { FuseLoop, canAttach } from './support/fuse-loop.ts';

jest.setTimeout(300_000);

const MiB = 1024 * 1024;

/**
 * Bytes of data a node's backing file holds: the sum of its extents as FIEMAP reports them
 * (`filefrag`). Not `du`: ext4 counts its extent-tree blocks in st_blocks, and punching holes
 * one megabyte at a time can leave a tree block behind that the other node's file never grew.
 */
async function allocated(pair: Pair, n: NodeName): Promise<number> {
  const out = await tool('filefrag', ['-v', '-b1', pair.disk(n)]);
  let bytes = 0;
  for (const line of out.split('\n')) {
    // "  0:  4194304..12582911:  <physical>: <length>: ..." (length is 0 while delalloc)
    const m = /^\s*\d+:\s+(\d+)\.\.\s*(\d+):/.exec(line);
    if (m) bytes += Number(m[2]) - Number(m[1]) + 1;
  }
  return bytes;
}

async function sha(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

async function fio(pair: Pair, rw: string, offsetMiB: number, sizeMiB: number): Promise<void> {
  await tool('fio', [
    '--name=t',
    '--ioengine=nbd',
    `--uri=${pair.nbdUri('master')}`,
    `--rw=${rw}`,
    '--bs=1M',
    `--offset=${offsetMiB}M`,
    `--size=${sizeMiB}M`,
    '--iodepth=4',
    '--end_fsync=1',
  ]);
}

describe('TRIM and WRITE_ZEROES on a Connected pair', () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startTandemExport({ mib: 64, connected: true });
  });
  afterAll(async () => {
    await pair?.destroy();
  });

  test('nbdinfo shows can_trim and can_zero', async () => {
    const info = JSON.parse(await tool('nbdinfo', ['--json', pair.nbdUri('master')])) as {
      exports: { can_trim: boolean; can_zero: boolean }[];
    };
    expect(info.exports[0]).toMatchObject({ can_trim: true, can_zero: true });
  });

  test('fio --rw=trim gives the space back on both nodes; the disks stay identical', async () => {
    await fio(pair, 'write', 0, 32);
    await pair.waitInSync();
    const before = { master: await allocated(pair, 'master'), backup: await allocated(pair, 'backup') };
    expect(before.master).toBeGreaterThanOrEqual(32 * MiB);
    expect(before.backup).toBeGreaterThanOrEqual(32 * MiB);
    const dwBefore = (await pair.status('backup')).counters.dw;

    await fio(pair, 'trim', 8, 24);
    const after = { master: await allocated(pair, 'master'), backup: await allocated(pair, 'backup') };
    console.log(`allocated before trim ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);
    expect(after.master).toBeLessThanOrEqual(before.master - 24 * MiB);
    expect(after.backup).toBeLessThanOrEqual(before.backup - 24 * MiB);
    // The backup applied the trims it was sent (not a resync): its write counter moved.
    expect((await pair.status('backup')).counters.dw).toBeGreaterThanOrEqual(dwBefore + 24 * MiB);
    const m = await pair.diskBytes('master', 8 * MiB, 24 * MiB);
    expect(m.equals(Buffer.alloc(24 * MiB))).toBe(true);
    expect((await pair.diskBytes('master', 0, 8 * MiB)).equals(Buffer.alloc(8 * MiB))).toBe(false);
    expect(await sha(pair.disk('backup'))).toBe(await sha(pair.disk('master')));
    expect((await pair.status('master')).oosBytes).toBe(0);
  });

  test('WRITE_ZEROES from nbdcopy (a sparse source) punches holes on both nodes', async () => {
    await fio(pair, 'write', 32, 16);
    await pair.waitInSync();
    const before = { master: await allocated(pair, 'master'), backup: await allocated(pair, 'backup') };
    // A 48 MiB source that is all holes: nbdcopy sends zero requests, not data.
    const zeros = join(pair.dir, 'zeros.img');
    await writeFile(zeros, '');
    await truncate(zeros, 48 * MiB);
    await tool('nbdcopy', [zeros, pair.nbdUri('master')]);
    const after = { master: await allocated(pair, 'master'), backup: await allocated(pair, 'backup') };
    console.log(`allocated before zeroes ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);
    expect(after.master).toBeLessThanOrEqual(before.master - 16 * MiB);
    expect(after.backup).toBeLessThanOrEqual(before.backup - 16 * MiB);
    expect((await pair.diskBytes('backup', 0, 48 * MiB)).equals(Buffer.alloc(48 * MiB))).toBe(true);
    expect(await sha(pair.disk('backup'))).toBe(await sha(pair.disk('master')));
  });

  test('a trim while the peer is away is resynced as a hole', async () => {
    await fio(pair, 'write', 0, 16);
    await pair.waitInSync();
    await pair.ok('backup', 'disconnect', 'mysql');
    await pair.waitFor('master', (s) => s.cstate !== 'Connected', 20_000, 'master to lose its peer');
    const backupBefore = await allocated(pair, 'backup');
    await fio(pair, 'trim', 0, 16);
    const oos = (await pair.status('master')).oosBytes;
    expect(oos).toBeGreaterThanOrEqual(16 * MiB);
    await pair.ok('backup', 'connect', 'mysql');
    await pair.waitInSync();
    const backupAfter = await allocated(pair, 'backup');
    console.log(`backup allocated before resync ${backupBefore}, after ${backupAfter} (oos was ${oos})`);
    expect(backupAfter).toBeLessThanOrEqual(backupBefore - 16 * MiB);
    expect(await sha(pair.disk('backup'))).toBe(await sha(pair.disk('master')));
  });
});

describe.each([
  ['ext4', ['mkfs.ext4', '-q', '-F']],
  ['xfs', ['mkfs.xfs', '-q', '-f']],
] as const)('fstrim on a mounted %s', (_fs, mkfs) => {
  let pair: Pair;
  beforeAll(async () => {
    if (canAttach) pair = await startTandemExport({ mib: 320, connected: true });
  });
  afterAll(async () => {
    await pair?.destroy();
  });

  (canAttach ? it : it.skip)('deleting a file and fstrim give its space back on both nodes', async () => {
    const mnt = join(pair.dir, 'mnt');
    await mkdir(mnt, { recursive: true });
    const dev = await FuseLoop.attach(pair, 'master');
    try {
      await tool(mkfs[0], [...mkfs.slice(1), dev.dev]);
      await tool('mount', [dev.dev, mnt]);
      await writeFile(join(mnt, 'big'), randomBytes(96 * MiB));
      await tool('sync', ['-f', join(mnt, 'big')]);
      await pair.waitInSync();
      const before = { master: await allocated(pair, 'master'), backup: await allocated(pair, 'backup') };
      expect(before.backup).toBeGreaterThanOrEqual(96 * MiB);
      await tool('rm', [join(mnt, 'big')]);
      // ext4 frees a deleted file's blocks when the journal commits; fstrim skips them before.
      await tool('sync', ['-f', mnt]);
      await tool('fstrim', ['-v', mnt]);
      await tool('umount', [mnt]);
      const after = { master: await allocated(pair, 'master'), backup: await allocated(pair, 'backup') };
      console.log(`${_fs}: allocated before fstrim ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);
      expect(after.master).toBeLessThanOrEqual(before.master - 80 * MiB);
      expect(after.backup).toBeLessThanOrEqual(before.backup - 80 * MiB);
      expect(await sha(pair.disk('backup'))).toBe(await sha(pair.disk('master')));
    } finally {
      await tool('umount', [mnt]).catch(() => undefined);
      await dev.detach();
    }
  });
});
