// The seed tutorial, sections 7-11, replayed with tandemadm in place of drbdadm:
// create-md on both, up, force-primary, initial sync, write through the Primary's
// NBD export, demote, promote the other node, read the same bytes back there.
// Under protocols A, B and C.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Pair, tool } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { nbdWire } from '../../src/nbd/index.ts';
import { jest } from '@jest/globals';

jest.setTimeout(180_000);

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe.each(['A', 'B', 'C'] as const)('tutorial replay under protocol %s', (protocol) => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await Pair.create({ protocol, masterMiB: 48, backupMiB: 64 });
  });
  afterAll(async () => {
    await pair.destroy();
  });

  test('create-md, up, primary --force, sync, write, switch roles, read back', async () => {
    // §7.3 create-md on both nodes
    const md = await pair.ok('master', 'create-md', 'mysql');
    expect(md).toMatch(/initializing bitmap \(\d+ KB\) to all zero/);
    expect(md).toContain('New tandem meta data block successfully created.');
    await pair.ok('backup', 'create-md', 'mysql');
    // create-md again without confirmation is refused and keeps the metadata
    const again = await pair.adm('master', 'create-md', 'mysql');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/already exists; refusing to overwrite/);

    // §8.1 up on master alone: WFConnection, Secondary/Unknown, Inconsistent/DUnknown
    await pair.ok('master', 'up', 'mysql');
    const lone = await pair.ok('master', 'status', 'mysql');
    expect(lone).toContain(` 0: cs:WFConnection ro:Secondary/Unknown ds:Inconsistent/DUnknown ${protocol} r-----`);
    // promoting without UpToDate data is refused, as drbdadm refuses it
    const refused = await pair.adm('master', 'primary', 'mysql');
    expect(refused.code).toBe(11);
    expect(refused.stderr).toContain('State change failed: (-2) Need access to UpToDate data');
    // tandemadm -- --force primary mysql
    await pair.ok('master', '--', '--force', 'primary', 'mysql');
    expect((await pair.ok('master', 'role', 'mysql')).trim()).toBe('Primary/Unknown');
    expect((await pair.ok('master', 'dstate', 'mysql')).trim()).toBe('UpToDate/DUnknown');

    // §8.2 backup comes up: full sync from master; the device is the smaller disk
    await pair.ok('backup', 'up', 'mysql');
    await pair.waitInSync();
    expect((await pair.ok('master', 'cstate', 'mysql')).trim()).toBe('Connected');
    expect((await pair.ok('backup', 'role', 'mysql')).trim()).toBe('Secondary/Primary');
    const st = await pair.status('master');
    expect(st.size).toBe(48 * 1024 * 1024 - 0);
    expect(st.oosBytes).toBe(0);
    // The full sync read the whole device on master (runs of zeroes travel as ranges only).
    expect(st.counters.dr).toBeGreaterThanOrEqual(48 * 1024 * 1024);

    // A Secondary's device cannot be opened
    await expect(tool('nbdinfo', [pair.nbdUri('backup')])).rejects.toThrow(/nbd_opt_go/);
    const { client, replies } = await RawNbdClient.open({ path: pair.nbdSocket('backup') }, 'mysql');
    client.destroy();
    const last = replies[replies.length - 1]!;
    expect(last.reply).toBe(nbdWire.Rep.NBD_REP_ERR_POLICY);
    expect(last.data.toString('utf8')).toContain('mysql is Secondary: wrong medium type');
    // nor can it be promoted while master is Primary (no allow-two-primaries here)
    const second = await pair.adm('backup', 'primary', 'mysql');
    expect(second.code).toBe(11);
    expect(second.stderr).toContain('Multiple primaries not allowed by config');

    // §10-11: write through master's export (nbdcopy), demote, promote backup, read back
    const data = randomBytes(8 * 1024 * 1024);
    const src = join(pair.dir, 'data.bin');
    await writeFile(src, data);
    await tool('nbdcopy', ['--flush', src, pair.nbdUri('master')]);
    const info = JSON.parse(await tool('nbdinfo', ['--json', pair.nbdUri('master')])) as {
      exports: { 'export-size': number }[];
    };
    expect(info.exports[0]!['export-size']).toBe(48 * 1024 * 1024);
    await pair.ok('master', 'secondary', 'mysql');
    expect((await pair.ok('master', 'role', 'mysql')).trim()).toBe('Secondary/Secondary');
    await pair.ok('backup', 'primary', 'mysql');
    expect((await pair.ok('backup', 'role', 'mysql')).trim()).toBe('Primary/Secondary');
    const out = join(pair.dir, 'out.bin');
    await tool('nbdcopy', [pair.nbdUri('backup'), out]);
    const back = await readFile(out);
    expect(back.length).toBe(48 * 1024 * 1024);
    expect(sha(back.subarray(0, data.length))).toBe(sha(data));
    // and both backing disks hold the same device contents
    expect(sha(await pair.diskBytes('master', 0, 48 << 20))).toBe(sha(await pair.diskBytes('backup', 0, 48 << 20)));

    // down on both, cleanly
    await pair.ok('backup', 'secondary', 'mysql');
    await pair.ok('master', 'down', 'mysql');
    await pair.ok('backup', 'down', 'mysql');
    expect((await pair.ok('master', 'cstate', 'mysql')).trim()).toBe('Unconfigured');
  });
});
