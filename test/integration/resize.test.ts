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

// A node that never agreed a size with its peer (fresh metadata here; in the simulator's
// seed 25337, the record lost with its cache) forced Primary alone takes its whole disk.
// The smaller peer cannot hold that and both refuse, as DRBD does; `resize --size` on the
// StandAlone Primary is the way back, and the pair then syncs.
test('a larger node forced Primary alone is refused by its smaller peer; resize --size brings the pair back', async () => {
  const pair = await Pair.create({ masterMiB: 40, backupMiB: 32 });
  try {
    await pair.ok('master', 'create-md', 'mysql');
    await pair.ok('backup', 'create-md', 'mysql');
    await pair.ok('master', 'up', 'mysql');
    await pair.ok('master', 'disconnect', 'mysql');
    await pair.ok('master', '--', '--force', 'primary', 'mysql');
    expect((await pair.status('master')).size).toBe(40 * MiB);
    const data = randomBytes(MiB);
    const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
    client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: 4 * MiB, data });
    expect((await client.reply()).error).toBe(0);

    await pair.ok('backup', 'up', 'mysql');
    await pair.ok('master', 'connect', 'mysql');
    await pair.waitFor(
      'master',
      (s) => s.cstate === 'StandAlone' && /disk size is too small/.test(s.lastError ?? ''),
      30_000,
      'the size refusal',
    );

    // Refused with a clear error and nothing changed: while an NBD client has the device
    // open, bigger than the disk, not a size, and when not StandAlone.
    let r = await pair.adm('master', '--', '--size=32M', 'resize', 'mysql');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/NBD client\(s\) have the device open/);
    client.destroy();
    r = await pair.adm('master', '--', '--size=41M', 'resize', 'mysql');
    expect(r.stderr).toMatch(/the disk holds 41943040 bytes, not 42991616/);
    r = await pair.adm('master', '--', '--size=1x', 'resize', 'mysql');
    expect(r.stderr).toMatch(/--size: '1x' is not a size/);
    expect((await pair.status('master')).size).toBe(40 * MiB);

    await pair.ok('master', '--', '--size=32M', 'resize', 'mysql');
    expect((await pair.status('master')).size).toBe(32 * MiB);
    await pair.ok('master', 'connect', 'mysql');
    await pair.ok('backup', 'connect', 'mysql').catch(() => undefined); // it may be waiting already
    await pair.waitInSync();
    expect((await pair.status('backup')).size).toBe(32 * MiB);
    expect((await pair.diskBytes('backup', 0, 32 * MiB)).equals(await pair.diskBytes('master', 0, 32 * MiB))).toBe(
      true,
    );
    expect((await pair.diskBytes('backup', 4 * MiB, MiB)).equals(data)).toBe(true);
    r = await pair.adm('master', '--', '--size=16M', 'resize', 'mysql');
    expect(r.stderr).toMatch(/needs the resource StandAlone \(it is Connected\)/);
  } finally {
    await pair.destroy();
  }
});
