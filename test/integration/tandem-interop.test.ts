// Real NBD clients that nobody here wrote, against a running tandem export (a Connected
// protocol C pair, so every write is mirrored): nbdinfo, nbdcopy round trips, qemu-img
// convert/compare, and fio's nbd engine with verify=crc32c, random and sequential, at
// several queue depths. Afterwards the Secondary's disk holds the same bytes.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { nbdWire } from '../../src/nbd/index.ts';
import { tool, type Pair } from './support/pair.ts';
import { runTool } from './support/run-tool.ts';
import { startTandemExport } from './support/tandem-export.ts';

jest.setTimeout(300_000);

const { TransmissionFlag: TF } = nbdWire;
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let pair: Pair;
let uri: string;

beforeAll(async () => {
  pair = await startTandemExport({ mib: SIZE / MiB, connected: true });
  uri = pair.nbdUri('master');
});

afterAll(async () => {
  await pair?.destroy();
});

describe('real NBD clients against tandem', () => {
  it('nbdinfo: size, exactly the honoured flags, block sizes, --list', async () => {
    const info = JSON.parse(await tool('nbdinfo', ['--json', uri])) as { exports: Record<string, unknown>[] };
    const e = info.exports[0]!;
    expect(e).toMatchObject({
      'export-name': 'mysql',
      'export-size': SIZE,
      is_read_only: false,
      can_flush: true,
      can_fua: true,
      can_multi_conn: false,
      can_trim: true, // TRIM and WRITE_ZEROES are mirrored to the peer (docs/design/2026-12-06-discards.md)
      can_zero: true,
      can_cache: false,
      block_size_minimum: 1,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
    });
    expect(String(e.description)).toContain('tandem resource mysql on master');
    const list = await tool('nbdinfo', ['--list', '--json', uri]);
    expect((JSON.parse(list) as { exports: { 'export-name': string }[] }).exports.map((x) => x['export-name'])).toEqual(
      ['mysql'],
    );
    // the flags as the wire carries them
    const raw = await tool('nbdinfo', [uri]);
    expect(raw).toMatch(/can_fua: true/);
    expect(TF.NBD_FLAG_SEND_FUA).toBe(8);
  });

  it('nbdcopy round trips with checksums, with and without a final flush, several connections', async () => {
    for (const [i, args] of [
      [1, ['--flush']],
      [2, ['--requests=64', '--request-size=65536']],
      [3, ['--connections=1', '--flush']],
    ] as const) {
      const data = randomBytes(SIZE);
      const src = join(pair.dir, `in${i}.bin`);
      const out = join(pair.dir, `out${i}.bin`);
      await writeFile(src, data);
      await tool('nbdcopy', [...args, src, uri]);
      await tool('nbdcopy', [uri, out]);
      expect(sha(await readFile(out))).toBe(sha(data));
    }
  });

  it('qemu-img convert in both directions and compare', async () => {
    const img = join(pair.dir, 'q.raw');
    await writeFile(img, randomBytes(SIZE));
    await tool('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', img, uri]);
    const cmp = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, uri]);
    expect([cmp.code, cmp.stdout.trim()]).toEqual([0, 'Images are identical.']);
    const back = join(pair.dir, 'q-back.raw');
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, back]);
    expect(sha(await readFile(back))).toBe(sha(await readFile(img)));
    // and a changed byte is found
    const original = await readFile(img);
    const one = join(pair.dir, 'one.bin');
    await writeFile(one, Buffer.from([original[0]! ^ 0xff]));
    await tool('nbdcopy', ['--flush', one, uri]);
    const diff = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', img, uri]);
    expect([diff.code, diff.stdout.trim()]).toEqual([1, 'Content mismatch at offset 0!']);
  });

  it.each([
    ['randwrite', '4k', 1],
    ['randwrite', '4k', 8],
    ['randwrite', '16k', 32],
    ['write', '1M', 8],
    ['randrw', '64k', 16],
  ] as const)('fio nbd engine %s bs=%s QD%d with verify=crc32c', async (rw, bs, qd) => {
    const r = await runTool('fio', [
      '--name=verify',
      '--ioengine=nbd',
      `--uri=${uri}`,
      `--rw=${rw}`,
      `--bs=${bs}`,
      `--iodepth=${qd}`,
      `--size=${16 * MiB}`,
      `--offset=${(qd % 3) * 16 * MiB}`,
      '--verify=crc32c',
      '--verify_fatal=1',
      '--do_verify=1',
      '--output-format=terse',
    ]);
    expect(r.stderr).not.toMatch(/verify|bad magic|crc32c/i);
    expect(r.code).toBe(0);
    const line = r.stdout.split('\n').find((l) => l.startsWith('3;'))!;
    expect(line.split(';')[4]).toBe('0'); // fio's error field
  });

  it('mirrored every byte: the Secondary disk equals what clients read from the Primary', async () => {
    const out = join(pair.dir, 'final.bin');
    await tool('nbdcopy', [uri, out]);
    await pair.waitFor('master', (s) => s.counters.pe === 0 && s.oosBytes === 0, 10_000, 'no pending writes');
    expect(sha(await pair.diskBytes('backup', 0, SIZE))).toBe(sha(await readFile(out)));
  });
});
