// The tutorial's §12, replayed: the link between master and backup is cut,
// backup is promoted, both write, the link comes back. tandem detects the split
// brain, never merges, and the tutorial's manual recovery works: the victim's
// changes are rolled back by a bitmap resync, and saved before they are overwritten.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { Pair, type NodeName } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { nbdWire } from '../../src/nbd/index.ts';

jest.setTimeout(180_000);

const BLOCK = 4096;

/**
 * One block, then a FLUSH, as an application that means it: before the flush returns, the
 * write is durable on the peer too (while connected), so it is not counted as a change of
 * this side when the pair parts right after (an unflushed write would be: its epoch is not
 * acknowledged yet, so it becomes a bitmap bit).
 */
async function writeBlock(pair: Pair, n: NodeName, block: number, fill: string): Promise<void> {
  const { client } = await RawNbdClient.open({ path: pair.nbdSocket(n) }, 'mysql');
  client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: block * BLOCK, data: Buffer.alloc(BLOCK, fill) });
  expect((await client.reply()).error).toBe(0);
  client.send({ command: nbdWire.Cmd.NBD_CMD_FLUSH });
  expect((await client.reply()).error).toBe(0);
  client.destroy();
}

async function splitBrain(pair: Pair, opts: { demoteBackup?: boolean; demoteMaster?: boolean } = {}): Promise<void> {
  await pair.startBlank();
  await pair.ok('master', 'primary', 'mysql');
  await writeBlock(pair, 'master', 1, 'A');
  await pair.cutLink();
  for (const n of ['master', 'backup'] as const)
    await pair.waitFor(n, (s) => s.cstate === 'WFConnection', 20_000, 'the lost link to be noticed');
  // §12.3: backup is promoted while cut off, and both sides write
  await pair.ok('backup', 'primary', 'mysql');
  expect((await pair.ok('backup', 'role', 'mysql')).trim()).toBe('Primary/Unknown');
  await writeBlock(pair, 'master', 10, 'M');
  await writeBlock(pair, 'backup', 10, 'B');
  await writeBlock(pair, 'backup', 20, 'b');
  if (opts.demoteBackup) await pair.ok('backup', 'secondary', 'mysql');
  if (opts.demoteMaster) await pair.ok('master', 'secondary', 'mysql');
  await pair.healLink();
}

describe('split brain (tutorial §12)', () => {
  test("detected, never merged, recovered with the tutorial's commands; the victim's blocks are saved", async () => {
    const pair = await Pair.create({ masterMiB: 64, backupMiB: 64 });
    const handlerLog = join(pair.dir, 'split-brain-handler.log');
    const discarded = join(pair.dir, 'discarded');
    const handlers = `handlers { split-brain "echo $DRBD_RESOURCE $DRBD_PEER_ADDRESS $DRBD_MINOR >> ${handlerLog}"; }`;
    // Both nodes' configs get the handler and the directory for saved blocks.
    const { writeFile } = await import('node:fs/promises');
    for (const n of ['master', 'backup'] as const) {
      const text = pair
        .configText(n)
        .replace(
          'resource mysql {',
          `resource mysql {\n  ${handlers}\n  disk { discarded-data-dir ${discarded}/${n}; }`,
        );
      await writeFile(pair.configPath(n), text);
    }
    try {
      await splitBrain(pair);
      // §12.5: detected on reconnect; both stay Primary and refuse to talk.
      for (const n of ['master', 'backup'] as const) {
        const s = await pair.waitFor(n, (x) => x.cstate === 'StandAlone', 30_000, 'StandAlone after split brain');
        expect(s.role).toBe('Primary');
        expect(s.lastDecision?.decision).toBe('split-brain');
        expect(s.lastError).toMatch(/Split-Brain detected/);
      }
      expect((await pair.ok('master', 'role', 'mysql')).trim()).toBe('Primary/Unknown');
      expect((await readFile(handlerLog, 'utf8')).trim().split('\n')[0]).toMatch(/^mysql 127\.0\.0\.[23] 0$/);
      // Nothing merged: each side still has its own block 10.
      expect((await pair.diskBytes('master', 10 * BLOCK, 1)).toString()).toBe('M');
      expect((await pair.diskBytes('backup', 10 * BLOCK, 1)).toString()).toBe('B');

      // §12.6: on backup (the victim): disconnect, secondary, --discard-my-data connect; on master: connect
      await pair.ok('backup', 'disconnect', 'mysql');
      await pair.ok('backup', 'secondary', 'mysql');
      expect((await pair.ok('backup', 'cstate', 'mysql')).trim()).toBe('StandAlone');
      await pair.ok('backup', '--', '--discard-my-data', 'connect', 'mysql');
      await pair.ok('master', 'connect', 'mysql');
      await pair.waitInSync();
      const b = await pair.status('backup');
      expect(b.lastDecision?.decision).toBe('bitmap-target');
      expect(b.counters.nr).toBeLessThan(64 * 1024); // a bitmap resync of a few blocks, not the device
      // The survivor's data wins …
      expect((await pair.diskBytes('backup', 10 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 'M'))).toBe(true);
      expect((await pair.diskBytes('backup', 20 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 0))).toBe(true);
      expect((await pair.diskBytes('backup', 0, 64 << 20)).equals(await pair.diskBytes('master', 0, 64 << 20))).toBe(
        true,
      );
      // … and the victim's overwritten blocks are saved, with a map of where they were.
      expect(b.discardedBlocksSavedTo).toBeDefined();
      const img = await readFile(b.discardedBlocksSavedTo!);
      expect(img.subarray(10 * BLOCK, 11 * BLOCK).equals(Buffer.alloc(BLOCK, 'B'))).toBe(true);
      expect(img.subarray(20 * BLOCK, 21 * BLOCK).equals(Buffer.alloc(BLOCK, 'b'))).toBe(true);
      const map = JSON.parse(await readFile(`${b.discardedBlocksSavedTo!}.json`, 'utf8')) as {
        ranges: [number, number][];
      };
      expect(map.ranges).toEqual(
        expect.arrayContaining([
          [10 * BLOCK, BLOCK],
          [20 * BLOCK, BLOCK],
        ]),
      );
    } finally {
      await pair.destroy();
    }
  });

  test('after-sb-0pri discard-least-changes resolves it by itself when both were demoted', async () => {
    const pair = await Pair.create({ masterMiB: 64, backupMiB: 64, net: 'after-sb-0pri discard-least-changes;' });
    try {
      // master changes 1 block after the cut, backup 2: master's change is discarded.
      await splitBrain(pair, { demoteBackup: true, demoteMaster: true });
      await pair.waitInSync();
      const m = await pair.status('master');
      expect(m.lastDecision?.decision).toBe('bitmap-target');
      expect(m.lastDecision?.rule).toMatch(/discard-least-changes/);
      expect((await pair.diskBytes('master', 10 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 'B'))).toBe(true);
      expect((await pair.diskBytes('backup', 0, 64 << 20)).equals(await pair.diskBytes('master', 0, 64 << 20))).toBe(
        true,
      );
    } finally {
      await pair.destroy();
    }
  });

  test("after-sb-1pri discard-secondary keeps the Primary's data", async () => {
    const pair = await Pair.create({ masterMiB: 64, backupMiB: 64, net: 'after-sb-1pri discard-secondary;' });
    try {
      await splitBrain(pair, { demoteBackup: true });
      await pair.waitInSync();
      expect((await pair.status('backup')).lastDecision?.rule).toMatch(/discard-secondary/);
      expect((await pair.diskBytes('backup', 10 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 'M'))).toBe(true);
      expect((await pair.status('master')).role).toBe('Primary');
    } finally {
      await pair.destroy();
    }
  });
});
