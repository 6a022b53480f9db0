// Growing a pool-file volume (internal metadata at the end of the file) online, with
// real engines: grow-disk on both nodes while the Primary takes writes, then resize;
// the new area is synced and both disks end identical with every acknowledged write.
// And kill -9 in the middle of grow-disk: the engine comes back on whole metadata, at
// the old file size or the new one, and the pair grows once asked again.
import { access, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { callControl } from '../../src/cli/control.ts';
import { nbdWire } from '../../src/nbd/index.ts';
import { growIntentPath, internalFileBytesFor } from '../../src/replication/metadata.ts';
import { BLOCK, blockContent } from './support/blocks.ts';
import { Pair, type NodeName } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';

jest.setTimeout(240_000);
const MiB = 1024 * 1024;

/** Writes numbered blocks to the Primary, 8 in flight, until stopped; remembers what each block holds. */
async function startWriter(pair: Pair, blocks: number) {
  const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
  const acked = new Map<number, number>();
  const inflight = new Map<bigint, { block: number; seq: number }>();
  let seq = 0;
  let stop = false;
  const send = (): void => {
    const block = (seq * 2654435761) % blocks;
    inflight.set(client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: block * BLOCK, data: blockContent(seq) }), {
      block,
      seq,
    });
    seq++;
  };
  for (let i = 0; i < 8; i++) send();
  const done = (async () => {
    while (inflight.size > 0) {
      const r = await client.reply(() => 0, 30_000);
      const w = inflight.get(r.handle)!;
      inflight.delete(r.handle);
      if (r.error !== 0) throw new Error(`write of block ${w.block} failed with ${r.error}`);
      acked.set(w.block, w.seq);
      if (!stop) send();
    }
    client.destroy();
  })();
  return {
    acked,
    get writes() {
      return seq;
    },
    stop: async () => {
      stop = true;
      await done;
    },
  };
}

const ctl = (pair: Pair, n: NodeName) => join(pair.runDir(n), 'mysql.ctl');

async function growDisk(pair: Pair, n: NodeName, size: number): Promise<void> {
  const r = await callControl(ctl(pair, n), { cmd: 'grow-disk', size });
  if (!r.ok) throw new Error(`grow-disk on ${n}: ${r.error.message}`);
}

test('grow-disk on both nodes while the Primary writes, then resize: the new area is synced, nothing is lost', async () => {
  const pair = await Pair.create({ internalMeta: true, masterMiB: 17, backupMiB: 17, disk: 'size 16M;' });
  try {
    await pair.startBlank();
    await pair.ok('master', 'primary', 'mysql');
    expect((await pair.status('master')).size).toBe(16 * MiB);
    const writer = await startWriter(pair, (16 * MiB) / BLOCK);
    await new Promise((r) => setTimeout(r, 500));
    const before = writer.writes;
    // The config says 40M now; each node grows its own file, one after the other, under writes.
    pair.opts.disk = 'size 40M;';
    await pair.rewriteConfigs();
    await pair.ok('backup', 'grow-disk', 'mysql');
    await pair.ok('master', 'grow-disk', 'mysql');
    for (const n of ['master', 'backup'] as const) {
      const s = await pair.status(n);
      expect({ n, size: s.size, capacity: s.capacity }).toEqual({ n, size: 16 * MiB, capacity: 40 * MiB });
      expect((await stat(pair.disk(n))).size).toBe(internalFileBytesFor(Math.max(40 * MiB, 17 * MiB)));
      await expect(access(growIntentPath(pair.disk(n)))).rejects.toThrow();
    }
    await pair.ok('master', 'resize', 'mysql');
    for (const n of ['master', 'backup'] as const)
      await pair.waitFor(n, (s) => s.size === 40 * MiB, 30_000, 'grown to 40 MiB');
    await new Promise((r) => setTimeout(r, 300));
    await writer.stop();
    // Writes went on through both moves and the resize.
    expect(writer.writes - before).toBeGreaterThan(100);
    expect((await pair.status('backup')).lastDecision?.rule).toMatch(/grown from 16777216 to 41943040/);
    // A new client sees the new size and writes past the old end.
    const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
    client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: 39 * MiB, data: blockContent(999_999) });
    expect((await client.reply()).error).toBe(0);
    client.destroy();
    await pair.waitInSync();
    const master = await pair.diskBytes('master', 0, 40 * MiB);
    const backup = await pair.diskBytes('backup', 0, 40 * MiB);
    expect(backup.equals(master)).toBe(true);
    for (const [block, seq] of writer.acked)
      expect({ block, ok: backup.subarray(block * BLOCK, (block + 1) * BLOCK).equals(blockContent(seq)) }).toEqual({
        block,
        ok: true,
      });
    expect(backup.subarray(39 * MiB, 39 * MiB + BLOCK).equals(blockContent(999_999))).toBe(true);
    // Both engines start again on the moved metadata.
    for (const n of ['backup', 'master'] as const) await pair.ok(n, 'down', 'mysql');
    for (const n of ['master', 'backup'] as const) await pair.ok(n, 'up', 'mysql');
    await pair.waitInSync();
    expect((await pair.status('master')).size).toBe(40 * MiB);
  } finally {
    await pair.destroy();
  }
});

test('kill -9 in the middle of grow-disk: the engine comes back on whole metadata, at the old size or the new', async () => {
  const pair = await Pair.create({ internalMeta: true, masterMiB: 17, backupMiB: 17, disk: 'size 16M;' });
  try {
    await pair.startBlank();
    await pair.ok('master', 'primary', 'mysql');
    const writer = await startWriter(pair, (16 * MiB) / BLOCK);
    const outcomes: string[] = [];
    let size = 16 * MiB;
    // The move takes milliseconds: kill at increasing delays after the request reaches the engine.
    for (const delayMs of [0, 1, 2, 3, 5, 8, 13, 21]) {
      size += 8 * MiB;
      const fileBefore = (await stat(pair.disk('backup'))).size;
      const request = callControl(ctl(pair, 'backup'), { cmd: 'grow-disk', size }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, delayMs));
      await pair.kill9('backup');
      await request;
      // up settles an interrupted grow before it looks for the metadata.
      await pair.ok('backup', 'up', 'mysql');
      const fileAfter = (await stat(pair.disk('backup'))).size;
      expect([fileBefore, internalFileBytesFor(Math.max(size, fileBefore))]).toContain(fileAfter);
      await expect(access(growIntentPath(pair.disk('backup')))).rejects.toThrow();
      outcomes.push(fileAfter === fileBefore ? `${delayMs} ms: old size` : `${delayMs} ms: grown`);
      await pair.waitInSync();
    }
    await writer.stop();
    // How often the kill fell inside the move (settled at the next up), from the engine's log.
    const log = await readFile(pair.logPath('backup'), 'utf8');
    const count = (text: string) => log.split(text).length - 1;
    console.log(
      `grow-disk killed: ${outcomes.join(', ')}; settled at up: ${count('had committed: kept it')} kept, ${count('had not committed')} cut back; ${count('Grew the disk file')} finished before the kill`,
    );
    // Asked again, both grow and the pair takes the new size.
    pair.opts.disk = `size ${size / MiB}M;`;
    await pair.rewriteConfigs();
    await growDisk(pair, 'backup', size);
    await growDisk(pair, 'master', size);
    await pair.ok('master', 'resize', 'mysql');
    await pair.waitFor('backup', (s) => s.size === size, 30_000, `grown to ${size}`);
    await pair.waitInSync();
    const master = await pair.diskBytes('master', 0, size);
    const backup = await pair.diskBytes('backup', 0, size);
    expect(backup.equals(master)).toBe(true);
    for (const [block, seq] of writer.acked)
      expect({ block, ok: backup.subarray(block * BLOCK, (block + 1) * BLOCK).equals(blockContent(seq)) }).toEqual({
        block,
        ok: true,
      });
  } finally {
    await pair.destroy();
  }
});

test('grow-disk on both nodes during the initial full sync: the sync finishes, then the pair grows', async () => {
  const pair = await Pair.create({
    internalMeta: true,
    masterMiB: 65,
    backupMiB: 65,
    disk: 'size 64M;',
    rate: '16M',
  });
  try {
    for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
    for (const n of ['master', 'backup'] as const) await pair.ok(n, 'up', 'mysql');
    await pair.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected');
    await pair.ok('master', '--', '--overwrite-data-of-peer', 'primary', 'mysql');
    await pair.waitFor('master', (s) => s.cstate === 'SyncSource', 10_000, 'SyncSource');
    pair.opts.disk = 'size 128M;';
    await pair.rewriteConfigs();
    await pair.ok('backup', 'grow-disk', 'mysql');
    await pair.ok('master', 'grow-disk', 'mysql');
    expect((await pair.status('master')).cstate).toMatch(/SyncSource|Connected/);
    await pair.waitInSync(120_000);
    await pair.ok('master', 'resize', 'mysql');
    await pair.waitFor('backup', (s) => s.size === 128 * MiB, 30_000, 'grown to 128 MiB');
    await pair.waitInSync(120_000);
    const master = await pair.diskBytes('master', 0, 128 * MiB);
    const backup = await pair.diskBytes('backup', 0, 128 * MiB);
    expect(backup.equals(master)).toBe(true);
    for (const n of ['master', 'backup'] as const) expect((await pair.status(n)).oosBytes).toBe(0);
  } finally {
    await pair.destroy();
  }
});
