// fencing resource-and-stonith: a Primary that loses its peer completes no
// write until the fence-peer handler has confirmed the peer cannot take over; once
// the pair is whole again, the unfence-peer handler runs on the Primary.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { jest } from '@jest/globals';
import { Pair } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { nbdWire } from '../../src/nbd/index.ts';

jest.setTimeout(120_000);
const BLOCK = 4096;

async function fencedPair(handler: string, unfence?: string): Promise<Pair> {
  const pair = await Pair.create({ masterMiB: 32, backupMiB: 32, disk: 'fencing resource-and-stonith;' });
  const handlers = `fence-peer "${handler}";${unfence ? ` unfence-peer "${unfence}";` : ''}`;
  for (const n of ['master', 'backup'] as const) {
    await writeFile(
      pair.configPath(n),
      pair.configText(n).replace('resource mysql {', `resource mysql {\n  handlers { ${handlers} }`),
    );
  }
  await pair.startBlank();
  await pair.ok('master', 'primary', 'mysql');
  return pair;
}

describe('fencing resource-and-stonith', () => {
  test('writes after a link cut wait for the fence-peer handler, then complete', async () => {
    const dir = '/tmp';
    const pair = await fencedPair(
      `sleep 1.5; echo fenced $DRBD_RESOURCE $DRBD_PEER_ADDRESS >> ${dir}/tandem-fence-$PPID.log; exit 7`,
    );
    try {
      const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
      client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: 0, data: Buffer.alloc(BLOCK, 1) });
      expect((await client.reply()).error).toBe(0);
      await pair.cutLink();
      const t0 = Date.now();
      client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: BLOCK, data: Buffer.alloc(BLOCK, 2) });
      const frozen = await pair.waitFor('master', (s) => s.suspended, 20_000, 'I/O frozen');
      expect(frozen.cstate).not.toBe('Connected');
      expect(await pair.ok('master', 'status', 'mysql')).toMatch(/ C s-----/);
      const r = await client.reply(() => 0, 30_000);
      const waited = Date.now() - t0;
      expect(r.error).toBe(0);
      expect((await pair.status('master')).suspended).toBe(false);
      expect(waited).toBeGreaterThan(1500); // not before the handler finished
      expect(await readFile(pair.logPath('master'), 'utf8')).toMatch(/fence-peer handler exited 7: the peer is fenced/);
      client.destroy();
    } finally {
      await pair.destroy();
    }
  });

  test('a failing fence-peer handler keeps I/O frozen until resume-io', async () => {
    const pair = await fencedPair('exit 1');
    try {
      const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
      await pair.cutLink();
      client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: 0, data: Buffer.alloc(BLOCK, 3) });
      await pair.waitFor('master', (s) => s.suspended, 20_000, 'I/O frozen');
      await new Promise((r) => setTimeout(r, 1500));
      expect((await pair.status('master')).suspended).toBe(true);
      expect(client.pending).toBe(0); // nothing was acknowledged while frozen
      await pair.ok('master', 'resume-io', 'mysql');
      expect((await client.reply(() => 0, 10_000)).error).toBe(0);
      client.destroy();
    } finally {
      await pair.destroy();
    }
  });

  test('the unfence-peer handler runs on the Primary when it is Connected with an UpToDate peer again, and only then', async () => {
    const log = `/tmp/tandem-unfence-${process.pid}.log`;
    await rm(log, { force: true });
    const lines = async () => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean);
    const pair = await fencedPair('exit 7', `echo $TANDEM_HANDLER $DRBD_RESOURCE $(hostname) >> ${log}`);
    try {
      // The promotion of an UpToDate, Connected node makes the pair whole.
      await eventuallyLines(lines, 1);
      expect((await lines())[0]).toMatch(/^unfence-peer mysql /);
      const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
      await pair.cutLink();
      client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: 0, data: Buffer.alloc(BLOCK, 5) });
      expect((await client.reply(() => 0, 30_000)).error).toBe(0); // fenced (exit 7), resumed
      await new Promise((r) => setTimeout(r, 500));
      expect(await lines()).toHaveLength(1); // not while apart
      await pair.healLink();
      await pair.waitInSync();
      await eventuallyLines(lines, 2);
      expect(await pair.diskBytes('backup', 0, BLOCK)).toEqual(Buffer.alloc(BLOCK, 5)); // after the resync
      await pair.ok('master', 'secondary', 'mysql').catch(() => undefined);
      client.destroy();
      await new Promise((r) => setTimeout(r, 500));
      expect(await lines()).toHaveLength(2); // the Secondary never runs it
    } finally {
      await pair.destroy();
      await rm(log, { force: true });
    }
  });

  test('a node that cannot see its peer becomes Primary only once fence-peer has fenced the peer', async () => {
    const allow = `/tmp/tandem-fence-allow-${process.pid}`;
    await rm(allow, { force: true });
    const pair = await fencedPair(`test -e ${allow} && exit 7; exit 1`);
    try {
      await pair.ok('master', 'secondary', 'mysql');
      await pair.cutLink();
      await pair.waitFor('backup', (s) => s.cstate !== 'Connected', 20_000, 'the link to drop');
      // The peer may be Primary on the other side of the partition: no promotion on a guess.
      const refused = await pair.adm('backup', 'primary', 'mysql');
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(
        /Refusing to be Primary while peer is not outdated \(fence-peer handler exited 1\)/,
      );
      expect((await pair.status('backup')).role).toBe('Secondary');
      // Restarted alone, the disk is Consistent (newest unknown); the fence makes it UpToDate.
      await pair.ok('backup', 'down', 'mysql');
      await pair.ok('backup', 'up', 'mysql');
      expect((await pair.status('backup')).disk).toBe('Consistent');
      await writeFile(allow, '');
      await pair.ok('backup', 'primary', 'mysql');
      const s = await pair.status('backup');
      expect([s.role, s.disk]).toEqual(['Primary', 'UpToDate']);
      // --force overrides a failed fence, and says what it risks.
      await rm(allow, { force: true });
      expect((await pair.adm('master', 'primary', 'mysql')).code).not.toBe(0);
      await pair.ok('master', '--', '--force', 'primary', 'mysql');
      expect(await readFile(pair.logPath('master'), 'utf8')).toMatch(/Forced into a split brain situation/);
      await pair.healLink();
      await pair.waitFor('master', (s) => s.cstate === 'StandAlone', 20_000, 'the split brain to be detected');
      expect(await readFile(pair.logPath('master'), 'utf8')).toMatch(/Split-Brain detected/);
    } finally {
      await pair.destroy();
      await rm(allow, { force: true });
    }
  });
});

async function eventuallyLines(lines: () => Promise<string[]>, n: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  while ((await lines()).length < n) {
    if (Date.now() > deadline)
      throw new Error(`the unfence-peer handler ran ${(await lines()).length} times, expected ${n}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
