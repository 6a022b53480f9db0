// resize: grow online after both backing devices grew; the new area is synced;
// shrinking is refused.
import { randomBytes } from 'node:crypto';
import { truncate } from 'node:fs/promises';
import { jest } from '@jest/globals';
import { Pair, tool } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { nbdWire } from '../../src/nbd/index.ts';

jest.setTimeout(120_000);
const MiB = 1024 * 1024;

test('grows online, syncs the new area, refuses to shrink', async () => {
  const pair = await Pair.create({ masterMiB: 32, backupMiB: 32 });
  try {
    await pair.startBlank();
    await pair.ok('master', 'primary', 'mysql');
    // The new area holds different garbage on each node: the resize must sync it.
    await truncate(pair.disk('master'), 64 * MiB);
    await truncate(pair.disk('backup'), 64 * MiB);
    const { open } = await import('node:fs/promises');
    const h = await open(pair.disk('backup'), 'r+');
    await h.write(randomBytes(MiB), 0, MiB, 40 * MiB);
    await h.close();
    await pair.ok('master', 'resize', 'mysql');
    await pair.waitFor(
      'master',
      (s) => s.size === 64 * MiB && s.cstate === 'Connected' && s.peerDisk === 'UpToDate',
      30_000,
      'grown and in sync',
    );
    await pair.waitInSync();
    expect((await pair.status('backup')).size).toBe(64 * MiB);
    expect((await pair.status('backup')).lastDecision?.rule).toMatch(/grown from 33554432 to 67108864/);
    const info = JSON.parse(await tool('nbdinfo', ['--json', pair.nbdUri('master')])) as {
      exports: { 'export-size': number }[];
    };
    expect(info.exports[0]!['export-size']).toBe(64 * MiB);
    // Writes beyond the old end work and are replicated.
    const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
    const tail = randomBytes(MiB);
    client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: 60 * MiB, data: tail });
    expect((await client.reply()).error).toBe(0);
    client.destroy();
    await pair.waitInSync();
    expect((await pair.diskBytes('backup', 0, 64 * MiB)).equals(await pair.diskBytes('master', 0, 64 * MiB))).toBe(
      true,
    );
    // Shrinking is refused and changes nothing.
    await truncate(pair.disk('master'), 48 * MiB);
    const r = await pair.adm('master', 'resize', 'mysql');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Refusing to shrink/);
    expect((await pair.status('master')).size).toBe(64 * MiB);
  } finally {
    await pair.destroy();
  }
});

test('a disk that shrank while detached is refused at attach, and attaches again once it is whole', async () => {
  const pair = await Pair.create({ masterMiB: 32, backupMiB: 32 });
  try {
    await pair.startBlank();
    await pair.ok('backup', 'detach', 'mysql');
    await truncate(pair.disk('backup'), 16 * MiB);
    const r = await pair.adm('backup', 'attach', 'mysql');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/refusing to attach a shrunk disk/);
    expect((await pair.status('backup')).disk).toBe('Diskless');
    // The refused attach left nothing behind: with the disk whole again, attach works.
    await truncate(pair.disk('backup'), 32 * MiB);
    await pair.ok('backup', 'attach', 'mysql');
    await pair.ok('backup', 'connect', 'mysql'); // detach also disconnected
    await pair.waitFor(
      'backup',
      (s) => s.disk === 'UpToDate' && s.cstate === 'Connected',
      30_000,
      'attached and in sync',
    );
  } finally {
    await pair.destroy();
  }
});
