// A real filesystem on a tandem volume, the way these machines (no nbd kernel module) attach
// one: nbdfuse exposes the Primary's export as a file, losetup makes it /dev/loopN, then
// mkfs.ext4 / mkfs.xfs, mount, write files, unmount, fsck clean; switch roles (the tutorial's
// §11) and mount the same filesystem from the other node: the files are there.
// Needs root, /dev/fuse and loop devices; skipped (with the reason) where they are missing.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { tool, type Pair } from './support/pair.ts';
import { runTool } from './support/run-tool.ts';
import { startTandemExport } from './support/tandem-export.ts';
import { FuseLoop, canAttach } from './support/fuse-loop.ts';

jest.setTimeout(300_000);

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function mount(dev: string, at: string): Promise<void> {
  await mkdir(at, { recursive: true });
  await tool('mount', [dev, at]);
}

describe.each([
  ['ext4', ['mkfs.ext4', '-q', '-F'], ['e2fsck', '-fn']],
  ['xfs', ['mkfs.xfs', '-q', '-f'], ['xfs_repair', '-n']],
] as const)('%s on nbdfuse + loop over a Connected tandem pair', (_fs, mkfs, fsck) => {
  let pair: Pair;
  beforeAll(async () => {
    if (canAttach) pair = await startTandemExport({ mib: 320, connected: true });
  });
  afterAll(async () => {
    await pair?.destroy();
  });

  (canAttach ? it : it.skip)(
    'mkfs, mount, write files, umount, fsck clean, switch roles, mount on the other node, files there',
    async () => {
      const files = new Map<string, string>();
      const mnt = join(pair.dir, 'mnt');

      const a = await FuseLoop.attach(pair, 'master');
      await tool(mkfs[0], [...mkfs.slice(1), a.dev]);
      await mount(a.dev, mnt);
      for (let i = 0; i < 20; i++) {
        const data = randomBytes(1000 + i * 37_000);
        await writeFile(join(mnt, `file-${i}.bin`), data);
        files.set(`file-${i}.bin`, sha(data));
      }
      await tool('sync', []);
      await tool('umount', [mnt]);
      const clean = await runTool(fsck[0], [...fsck.slice(1), a.dev], { timeoutMs: 120_000 });
      expect({ code: clean.code, out: clean.stdout + clean.stderr }).toMatchObject({ code: 0 });
      await a.detach();

      // §11: the Primary is no longer open, so it may step down; the peer takes over.
      await pair.ok('master', 'secondary', 'mysql');
      await pair.ok('backup', 'primary', 'mysql');
      expect((await pair.ok('backup', 'role', 'mysql')).trim()).toBe('Primary/Secondary');

      const b = await FuseLoop.attach(pair, 'backup');
      const again = await runTool(fsck[0], [...fsck.slice(1), b.dev], { timeoutMs: 120_000 });
      expect(again.code).toBe(0);
      await mount(b.dev, mnt);
      try {
        for (const [name, digest] of files) expect(sha(await readFile(join(mnt, name)))).toBe(digest);
      } finally {
        await tool('umount', [mnt]);
        await b.detach();
      }
    },
  );
});

if (!canAttach) {
  test('filesystem suite needs root, /dev/fuse and loop devices', () => {
    console.warn('skipped: not root or no /dev/fuse or /dev/loop-control');
  });
}
