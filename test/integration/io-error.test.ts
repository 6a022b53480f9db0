// on-io-error detach: the Primary's disk starts failing under it (nbdkit's error
// filter, served through nbdfuse, switched on mid-run). The disk goes Failed →
// Diskless and the application keeps reading and writing through the peer,
// losing nothing.
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, truncate, writeFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jest } from '@jest/globals';
import { Pair } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { nbdWire } from '../../src/nbd/index.ts';

jest.setTimeout(180_000);
const run = promisify(execFile);
const MiB = 1024 * 1024;

describe('on-io-error detach', () => {
  let dir: string;
  let fuseDisk: string;
  let trigger: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tandem-ioerr-'));
    trigger = join(dir, 'TRIGGER');
    await writeFile(join(dir, 'disk.img'), '');
    await truncate(join(dir, 'disk.img'), 64 * MiB);
    await run('nbdkit', [
      '--unix',
      join(dir, 'nbdkit.sock'),
      '--pidfile',
      join(dir, 'nbdkit.pid'),
      '--filter=error',
      'file',
      join(dir, 'disk.img'),
      'error-rate=100%',
      `error-file=${trigger}`,
    ]);
    await mkdir(join(dir, 'fuse'));
    fuseDisk = join(dir, 'fuse', 'disk');
    spawn('nbdfuse', [fuseDisk, '--unix', join(dir, 'nbdkit.sock')], { stdio: 'ignore', detached: true }).unref();
    for (let i = 0; i < 100 && !existsSync(fuseDisk); i++) await new Promise((r) => setTimeout(r, 50));
  });
  afterAll(async () => {
    await run('fusermount3', ['-u', join(dir, 'fuse')]).catch(() =>
      run('umount', ['-l', join(dir, 'fuse')]).catch(() => {}),
    );
    await run('pkill', ['-F', join(dir, 'nbdkit.pid')]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  });

  test('the Primary keeps reading and writing through the peer after its disk fails', async () => {
    const pair = await Pair.create({ masterMiB: 64, backupMiB: 64, diskPath: { master: fuseDisk } });
    const marker = join(dir, 'pri-on-incon-degr.ran');
    await writeFile(
      pair.configPath('master'),
      pair
        .configText('master')
        .replace(
          'resource mysql {',
          `resource mysql {\n  handlers { pri-on-incon-degr "echo $DRBD_RESOURCE > ${marker}"; }`,
        ),
    );
    try {
      await pair.startBlank();
      await pair.ok('master', 'primary', 'mysql');
      const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
      const write = async (offset: number, data: Buffer): Promise<number> => {
        client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset, data });
        return (await client.reply()).error;
      };
      const read = async (offset: number, length: number): Promise<Buffer> => {
        client.send({ command: nbdWire.Cmd.NBD_CMD_READ, offset, length });
        const r = await client.reply(() => length);
        expect(r.error).toBe(0);
        return r.data;
      };
      const a = randomBytes(4 * MiB);
      const b = randomBytes(4 * MiB);
      expect(await write(0, a)).toBe(0);
      await writeFile(trigger, ''); // the disk starts failing
      expect(await write(8 * MiB, b)).toBe(0);
      const m = await pair.waitFor('master', (s) => s.disk === 'Diskless', 10_000, 'Diskless');
      expect(m.peerDisk).toBe('UpToDate');
      expect((await pair.ok('master', 'dstate', 'mysql')).trim()).toBe('Diskless/UpToDate');
      expect((await pair.ok('backup', 'dstate', 'mysql')).trim()).toBe('UpToDate/Diskless');
      expect((await read(0, 4 * MiB)).equals(a)).toBe(true); // served by the peer
      expect((await read(8 * MiB, 4 * MiB)).equals(b)).toBe(true);
      client.send({ command: nbdWire.Cmd.NBD_CMD_FLUSH });
      expect((await client.reply()).error).toBe(0);
      client.destroy();
      await unlink(trigger);
      expect((await pair.diskBytes('backup', 0, 4 * MiB)).equals(a)).toBe(true);
      expect((await pair.diskBytes('backup', 8 * MiB, 4 * MiB)).equals(b)).toBe(true);
      expect(await readFileText(pair.logPath('master'))).toMatch(
        /disk\(UpToDate->Failed\)[\s\S]*disk\(Failed->Diskless\)/,
      );
      // Losing the peer now leaves no reachable copy: pri-on-incon-degr runs, I/O fails.
      await pair.ok('backup', 'disconnect', 'mysql');
      for (let i = 0; i < 100 && !existsSync(marker); i++) await new Promise((r) => setTimeout(r, 50));
      expect((await readFileText(marker)).trim()).toBe('mysql');
    } finally {
      await pair.destroy();
    }
  });
});

async function readFileText(p: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  return readFile(p, 'utf8');
}

// Seed 29219: a node whose disk failed (or was detached) was forced Primary and then
// reported UpToDate with no disk. `--force` declares a node's data the truth; a Diskless
// node has none, and DRBD refuses it the same way.
test('primary --force on a Diskless node is refused and changes nothing', async () => {
  const pair = await Pair.create({ masterMiB: 32, backupMiB: 32 });
  try {
    await pair.startBlank();
    await pair.ok('backup', 'detach', 'mysql');
    await pair.ok('backup', 'disconnect', 'mysql');
    const r = await pair.adm('backup', '--', '--force', 'primary', 'mysql');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      /\(-2\) Need access to UpToDate data \(no local disk to force \(Diskless\): attach it first\)/,
    );
    const s = await pair.status('backup');
    expect([s.role, s.disk]).toEqual(['Secondary', 'Diskless']);
  } finally {
    await pair.destroy();
  }
});
