// Online verify finds a block corrupted behind the engine's back; a reconnect
// repairs it. invalidate / invalidate-remote force a full resync in either direction.
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { jest } from '@jest/globals';
import { Pair } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { nbdWire } from '../../src/nbd/index.ts';

jest.setTimeout(180_000);

const MiB = 1024 * 1024;
const BLOCK = 4096;

async function fill(pair: Pair, bytes: number): Promise<void> {
  const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
  for (let off = 0; off < bytes; off += MiB) {
    client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: off, data: randomBytes(MiB) });
    expect((await client.reply()).error).toBe(0);
  }
  client.destroy();
}

async function identical(pair: Pair, bytes: number): Promise<boolean> {
  return (await pair.diskBytes('master', 0, bytes)).equals(await pair.diskBytes('backup', 0, bytes));
}

describe('online verify', () => {
  test("finds a block corrupted directly in the Secondary's backing file; reconnecting repairs it", async () => {
    const pair = await Pair.create({ masterMiB: 32, backupMiB: 32 });
    try {
      await pair.startBlank();
      await pair.ok('master', 'primary', 'mysql');
      await fill(pair, 16 * MiB);
      expect(await identical(pair, 32 * MiB)).toBe(true);
      // Corrupt block 1000 on backup, behind the engine's back.
      const h = await open(pair.disk('backup'), 'r+');
      await h.write(Buffer.alloc(BLOCK, 'X'), 0, BLOCK, 1000 * BLOCK);
      await h.close();
      await pair.ok('master', 'verify', 'mysql');
      const seen = await pair.waitFor(
        'master',
        (s) => s.cstate === 'VerifyS' || s.cstate === 'Connected',
        10_000,
        'verify',
      );
      expect(['VerifyS', 'Connected']).toContain(seen.cstate);
      const done = await pair.waitFor(
        'master',
        (s) => s.cstate === 'Connected' && s.oosBytes > 0,
        60_000,
        'verify to finish',
      );
      expect(done.oosBytes).toBe(BLOCK);
      expect((await pair.status('backup')).oosBytes).toBe(BLOCK);
      expect(await pair.ok('master', 'status', 'mysql')).toContain('oos:4');
      // The repair: the tutorial's disconnect + connect on the node with bad data.
      const nrBefore = (await pair.status('backup')).counters.nr;
      await pair.ok('backup', 'disconnect', 'mysql');
      await pair.ok('backup', 'connect', 'mysql');
      await pair.waitFor(
        'master',
        (s) => s.cstate === 'Connected' && s.peerDisk === 'UpToDate' && s.oosBytes === 0,
        30_000,
        'repair',
      );
      expect(await identical(pair, 32 * MiB)).toBe(true);
      const b = await pair.status('backup');
      expect(b.lastDecision?.decision).toBe('bitmap-target');
      expect(b.counters.nr - nrBefore).toBeLessThan(64 * 1024); // the marked block, not the device
    } finally {
      await pair.destroy();
    }
  });

  test('invalidate and invalidate-remote resync the whole device towards the invalidated node', async () => {
    const pair = await Pair.create({ masterMiB: 32, backupMiB: 32 });
    try {
      await pair.startBlank();
      await pair.ok('master', 'primary', 'mysql');
      await fill(pair, 8 * MiB);
      const refused = await pair.adm('master', 'invalidate', 'mysql');
      expect(refused.code).toBe(11);
      expect(refused.stderr).toContain('Refusing to invalidate a Primary');
      // A full resync reads the whole device on the source (zero runs travel as ranges only).
      const before = (await pair.status('master')).counters.dr;
      await pair.ok('backup', 'invalidate', 'mysql');
      await pair.waitInSync();
      const b = await pair.status('backup');
      expect(b.lastDecision?.decision).toBe('full-target');
      expect((await pair.status('master')).counters.dr - before).toBeGreaterThanOrEqual(32 * MiB);
      expect(b.counters.nr).toBeGreaterThanOrEqual(16 * MiB); // the 8 MiB written, mirrored once and resynced once
      const before2 = (await pair.status('master')).counters.dr;
      await pair.ok('master', 'invalidate-remote', 'mysql');
      await pair.waitFor(
        'backup',
        (s) => s.lastDecision?.rule === 'invalidate-remote on the peer',
        10_000,
        'invalidate-remote',
      );
      await pair.waitInSync();
      expect((await pair.status('master')).counters.dr - before2).toBeGreaterThanOrEqual(32 * MiB);
      expect(await identical(pair, 32 * MiB)).toBe(true);
    } finally {
      await pair.destroy();
    }
  });
});

describe('csums-alg', () => {
  test('a full resync of nearly identical disks moves only the blocks that differ', async () => {
    const pair = await Pair.create({ masterMiB: 32, backupMiB: 32, net: 'csums-alg sha256;' });
    try {
      await pair.startBlank();
      await pair.ok('master', 'primary', 'mysql');
      await fill(pair, 32 * MiB);
      const h = await open(pair.disk('backup'), 'r+');
      await h.write(Buffer.alloc(BLOCK, 'X'), 0, BLOCK, 77 * BLOCK);
      await h.close();
      const nr = (await pair.status('backup')).counters.nr;
      const ns = (await pair.status('master')).counters.ns;
      await pair.ok('backup', 'invalidate', 'mysql'); // a full resync of 32 MiB …
      await pair.waitInSync();
      const moved = (await pair.status('master')).counters.ns - ns;
      process.stdout.write(`csums-alg full resync of 32 MiB sent ${moved} bytes of data\n`);
      expect((await pair.status('backup')).lastDecision?.decision).toBe('full-target');
      expect(moved).toBe(BLOCK); // … sends one block
      expect((await pair.status('backup')).counters.nr - nr).toBeLessThan(MiB);
      expect(await identical(pair, 32 * MiB)).toBe(true);
    } finally {
      await pair.destroy();
    }
  });
});
