// Every way two nodes can part, followed by the same story: each side writes
// while apart, both are demoted, both reconnect. Writes on both sides since the
// parting make a split brain, and it must be detected however the pair parted —
// a cut link, `disconnect` on either node, `down` of either node, a crashed
// engine — never resolved by silently syncing one side over the other. Until a
// person (or an after-sb policy) picks the victim, both sides keep their data.
// Then the tutorial's recovery (`--discard-my-data connect` on the victim)
// brings the pair back with the survivor's data on both disks.
import { jest } from '@jest/globals';
import { Pair, type NodeName } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { nbdWire } from '../../src/nbd/index.ts';

jest.setTimeout(180_000);

const BLOCK = 4096;

async function writeBlocks(pair: Pair, n: NodeName, first: number, count: number, fill: string): Promise<void> {
  const { client } = await RawNbdClient.open({ path: pair.nbdSocket(n) }, 'mysql');
  try {
    for (let b = first; b < first + count; b++) {
      client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: b * BLOCK, data: Buffer.alloc(BLOCK, fill) });
      expect((await client.reply()).error).toBe(0);
    }
  } finally {
    client.destroy();
  }
}

const other = (n: NodeName): NodeName => (n === 'master' ? 'backup' : 'master');

/** How the pair parts; afterwards neither node may be connected. */
const PARTINGS: Record<string, (pair: Pair) => Promise<void>> = {
  'the link is cut': async (pair) => {
    await pair.cutLink();
    for (const n of ['master', 'backup'] as const) {
      await pair.waitFor(n, (s) => s.cstate === 'WFConnection', 20_000, 'the lost link to be noticed');
    }
    // Both stop trying: the story goes on with `connect` on both, after the link is back.
    for (const n of ['master', 'backup'] as const) await pair.ok(n, 'disconnect', 'mysql');
    await pair.healLink();
  },
  '`disconnect` on the Primary': async (pair) => {
    await pair.ok('master', 'disconnect', 'mysql');
    await pair.ok('backup', 'disconnect', 'mysql');
  },
  '`disconnect` on the Secondary': async (pair) => {
    await pair.ok('backup', 'disconnect', 'mysql');
    await pair.ok('master', 'disconnect', 'mysql');
  },
  '`down` on the Secondary': async (pair) => {
    await pair.ok('backup', 'down', 'mysql');
    await pair.ok('master', 'disconnect', 'mysql');
    await pair.ok('backup', 'up', 'mysql');
    await pair.ok('backup', 'disconnect', 'mysql');
  },
  "the Secondary's engine is killed": async (pair) => {
    await pair.kill9('backup');
    await pair.waitFor('master', (s) => s.cstate === 'WFConnection', 20_000, 'the lost peer to be noticed');
    await pair.ok('master', 'disconnect', 'mysql');
    await pair.ok('backup', 'up', 'mysql');
    await pair.ok('backup', 'disconnect', 'mysql');
  },
};

describe('a split brain is detected however the two nodes parted', () => {
  test.each(Object.keys(PARTINGS))('%s', async (how) => {
    const pair = await Pair.create({ masterMiB: 64, backupMiB: 64 });
    try {
      await pair.startBlank();
      await pair.ok('master', 'primary', 'mysql');
      await writeBlocks(pair, 'master', 0, 4, 'a');
      // A first parting and reunion, with writes on the Primary alone in between:
      // the reunion must resync them, and leave both generations ready for the next parting.
      await PARTINGS[how]!(pair);
      await writeBlocks(pair, 'master', 100, 8, 'm');
      for (const n of ['master', 'backup'] as const) await pair.ok(n, 'connect', 'mysql');
      await pair.waitInSync();
      expect((await pair.diskBytes('backup', 100 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 'm'))).toBe(true);

      // The second parting: each side is Primary in turn and writes its own blocks.
      await PARTINGS[how]!(pair);
      await pair.ok('backup', 'primary', 'mysql');
      await writeBlocks(pair, 'master', 200, 4, 'M');
      await writeBlocks(pair, 'backup', 300, 4, 'B');
      for (const n of ['master', 'backup'] as const) await pair.ok(n, 'secondary', 'mysql');
      for (const n of ['master', 'backup'] as const) await pair.ok(n, 'connect', 'mysql');

      // Detected on both sides, and nothing overwritten.
      for (const n of ['master', 'backup'] as const) {
        const s = await pair.waitFor(n, (x) => x.cstate === 'StandAlone', 30_000, 'StandAlone after split brain');
        expect({ node: n, decision: s.lastDecision?.decision }).toEqual({ node: n, decision: 'split-brain' });
        expect(s.lastError).toMatch(/Split-Brain detected/);
      }
      expect((await pair.diskBytes('master', 200 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 'M'))).toBe(true);
      expect((await pair.diskBytes('master', 300 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 0))).toBe(true);
      expect((await pair.diskBytes('backup', 300 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 'B'))).toBe(true);
      expect((await pair.diskBytes('backup', 200 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 0))).toBe(true);

      // A person picks the victim (the tutorial's §12.6): master's changes go.
      const victim: NodeName = 'master';
      await pair.ok(victim, '--', '--discard-my-data', 'connect', 'mysql');
      await pair.ok(other(victim), 'connect', 'mysql');
      await pair.waitInSync();
      expect((await pair.status(victim)).lastDecision?.decision).toBe('bitmap-target');
      expect((await pair.diskBytes(victim, 0, 64 << 20)).equals(await pair.diskBytes(other(victim), 0, 64 << 20))).toBe(
        true,
      );
      expect((await pair.diskBytes(victim, 300 * BLOCK, BLOCK)).equals(Buffer.alloc(BLOCK, 'B'))).toBe(true);
    } finally {
      await pair.destroy();
    }
  });
});
