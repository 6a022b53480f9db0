// SIGKILL the Secondary's engine in the middle of a protocol C write stream:
// every write the Primary acknowledged must be on the Secondary's disk once it
// is back and resynced, and the two disks must end identical.
import { createHash } from 'node:crypto';
import { Pair } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { BLOCK, blockContent } from './support/blocks.ts';
import { nbdWire } from '../../src/nbd/index.ts';
import { jest } from '@jest/globals';

jest.setTimeout(180_000);

describe('Secondary killed with SIGKILL under protocol C', () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await Pair.create({ protocol: 'C', masterMiB: 32, backupMiB: 32 });
  });
  afterAll(async () => {
    await pair.destroy();
  });

  test('every acknowledged write reaches the Secondary after it returns', async () => {
    for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
    await pair.ok('master', 'up', 'mysql');
    await pair.ok('backup', 'up', 'mysql');
    await pair.waitFor('backup', (s) => s.cstate === 'Connected', 20_000, 'Connected');
    await pair.ok('master', '--', '--overwrite-data-of-peer', 'primary', 'mysql');
    await pair.waitInSync();

    const { client, replies } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
    expect(replies[replies.length - 1]!.reply).toBe(nbdWire.Rep.NBD_REP_ACK);
    const blocks = (32 * 1024 * 1024) / BLOCK;
    // Writes go to a scrambled order of blocks, 16 in flight; each block is written once.
    const order = Array.from({ length: blocks }, (_, i) => (i * 2654435761) % blocks);
    const acked = new Map<number, number>(); // block -> seq
    const inflight = new Map<bigint, { block: number; seq: number }>();
    let seq = 0;
    let killedAt = -1;
    let restartedAt = -1;
    const total = 3000;
    const send = (): void => {
      const block = order[seq]!;
      const h = client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: block * BLOCK, data: blockContent(seq) });
      inflight.set(h, { block, seq });
      seq++;
    };
    for (let i = 0; i < 16; i++) send();
    let restart: Promise<unknown> | undefined;
    while (inflight.size > 0) {
      const r = await client.reply(() => 0, 20_000);
      const w = inflight.get(r.handle)!;
      inflight.delete(r.handle);
      expect(r.error).toBe(0);
      acked.set(w.block, w.seq);
      if (acked.size === 800 && killedAt < 0) {
        await pair.kill9('backup');
        killedAt = acked.size;
      }
      if (acked.size === 1600 && restartedAt < 0) {
        restartedAt = acked.size;
        restart = pair.ok('backup', 'up', 'mysql');
      }
      if (seq < total) send();
    }
    await restart;
    client.destroy();
    expect(killedAt).toBe(800);
    const after = await pair.waitFor(
      'master',
      (s) => s.cstate === 'Connected' && s.peerDisk === 'UpToDate',
      60_000,
      'resync after restart',
    );
    // Only what was written while the peer was away moved, not the whole device.
    expect(after.lastDecision?.decision).toBe('bitmap-source');
    await pair.waitInSync();

    let checked = 0;
    for (const [block, s] of acked) {
      const onBackup = await pair.diskBytes('backup', block * BLOCK, BLOCK);
      if (!onBackup.equals(blockContent(s)))
        throw new Error(`acknowledged write ${s} to block ${block} is missing on the Secondary`);
      checked++;
    }
    expect(checked).toBe(total);
    const size = 32 * 1024 * 1024;
    const sum = async (n: 'master' | 'backup'): Promise<string> =>
      createHash('sha256')
        .update(await pair.diskBytes(n, 0, size))
        .digest('hex');
    expect(await sum('backup')).toBe(await sum('master'));
  });
});
