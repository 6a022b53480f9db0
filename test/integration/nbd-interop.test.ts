// src/nbd against real NBD clients: nbdinfo, nbdcopy, qemu-img and fio's nbd engine (all
// libnbd or qemu's own client), over a unix socket and over TCP. A few raw-socket checks show
// that a broken client is dropped and a bad request answered, and that the server keeps serving.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nbdWire, startNbdServer, type NbdExport, type NbdServer } from '../../src/nbd/index.ts';
import { FileExport } from './support/file-export.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { runTool } from './support/run-tool.ts';

const { Cmd, NbdErr } = nbdWire;
const MiB = 1024 * 1024;
const SECONDARY_MESSAGE = 'Resource mysql is Secondary: wrong medium type';

let dir: string;
let sock: string;
let server: NbdServer;
const exports = new Map<string, FileExport>();

const uri = (name: string): string => `nbd+unix:///${name}?socket=${sock}`;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** nbdinfo --json output, parsed; fails the test with nbdinfo's stderr if it failed. */
async function nbdinfoJson(args: string[]): Promise<{ exports: Record<string, unknown>[] }> {
  const r = await runTool('nbdinfo', ['--json', ...args]);
  if (r.code !== 0) throw new Error(`nbdinfo ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { exports: Record<string, unknown>[] };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-nbd-'));
  sock = join(dir, 'nbd.sock');
  exports.set(
    'disk',
    await FileExport.open(join(dir, 'disk.img'), { size: 16 * MiB, description: 'tandem test disk' }),
  );
  exports.set('scratch', await FileExport.open(join(dir, 'scratch.img'), { size: 16 * MiB }));
  exports.set('aligned', await FileExport.open(join(dir, 'aligned.img'), { size: 4 * MiB, minBlockSize: 4096 }));
  await writeFile(join(dir, 'ro.img'), randomBytes(MiB));
  exports.set('ro', await FileExport.open(join(dir, 'ro.img'), { readOnly: true }));
  server = await startNbdServer({
    path: sock,
    lookup: (name): NbdExport | { refuse: 'policy' | 'unknown'; message: string } => {
      if (name === 'mysql') return { refuse: 'policy', message: SECONDARY_MESSAGE };
      return exports.get(name) ?? { refuse: 'unknown', message: `No export named ${name}` };
    },
    listExports: () => [...exports.keys()],
  });
});

afterAll(async () => {
  await server?.close();
  for (const e of exports.values()) await e.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('nbdinfo', () => {
  it('reports size and exactly the advertised capabilities of a writable export', async () => {
    const [info] = (await nbdinfoJson([uri('disk')])).exports;
    expect(info).toMatchObject({
      'export-name': 'disk',
      'export-size': 16 * MiB,
      description: 'tandem test disk',
      is_read_only: false,
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_multi_conn: false,
      can_cache: false,
      can_df: false,
      block_size_minimum: 1,
      block_size_preferred: 4096,
      block_size_maximum: 32 * MiB,
    });
  });

  it('reports a read-only export as read-only, without write features', async () => {
    const [info] = (await nbdinfoJson([uri('ro')])).exports;
    expect(info).toMatchObject({
      'export-size': MiB,
      is_read_only: true,
      can_fua: false,
      can_trim: false,
      can_zero: false,
      can_flush: true,
    });
  });

  it('reports a minimum block size', async () => {
    const [info] = (await nbdinfoJson([uri('aligned')])).exports;
    expect(info).toMatchObject({ 'export-size': 4 * MiB, block_size_minimum: 4096, block_size_preferred: 4096 });
  });

  it('lists the exports', async () => {
    const list = await nbdinfoJson(['--list', uri('')]);
    expect(list.exports.map((e) => e['export-name']).sort()).toEqual(['aligned', 'disk', 'ro', 'scratch']);
  });

  it('fails to open a refused export, and the client gets our message', async () => {
    const r = await runTool('nbdinfo', [uri('mysql')], { env: { LIBNBD_DEBUG: '1' } });
    expect(r.code).not.toBe(0);
    // libnbd 1.14 shows the server's error string in its debug output.
    expect(r.stderr).toContain(SECONDARY_MESSAGE);
    expect(r.stderr).toMatch(/server replied with error to opt_go request/);
  });

  it('fails to open an unknown export', async () => {
    const r = await runTool('nbdinfo', [uri('nope')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/No such file or directory|unknown/i); // libnbd's errno for NBD_REP_ERR_UNKNOWN
  });
});

describe('data through real clients', () => {
  const image = randomBytes(16 * MiB);
  let src: string;

  beforeAll(async () => {
    src = join(dir, 'src.img');
    await writeFile(src, image);
  });

  it('copies 16 MiB in and out with nbdcopy, bit for bit', async () => {
    const before = exports.get('disk')!.calls.write;
    const copyIn = await runTool('nbdcopy', [src, uri('disk')]);
    expect(copyIn).toMatchObject({ code: 0 });
    expect(exports.get('disk')!.calls.write).toBeGreaterThan(before);
    expect(sha256(await readFile(join(dir, 'disk.img')))).toBe(sha256(image));

    const out = join(dir, 'out.img');
    const copyOut = await runTool('nbdcopy', [uri('disk'), out]);
    expect(copyOut).toMatchObject({ code: 0 });
    expect(sha256(await readFile(out))).toBe(sha256(image));
  });

  it('qemu-img compare sees the export identical to the source, and a one-byte change', async () => {
    const same = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri('disk')]);
    expect(same.stdout).toContain('Images are identical');
    expect(same.code).toBe(0);

    const changed = Buffer.from(image);
    changed[5_000_000] = changed[5_000_000]! ^ 0xff;
    const other = join(dir, 'changed.img');
    await writeFile(other, changed);
    const diff = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', other, uri('disk')]);
    expect(diff.code).toBe(1);
    expect(diff.stdout).toMatch(/Content mismatch at offset 4999[0-9]{3}/);
  });

  it("survives a fio verify run through fio's nbd engine", async () => {
    const help = await runTool('fio', ['--enghelp=nbd']);
    expect(help.stdout).toContain('uri'); // this fio has the nbd engine (libnbd)
    const r = await runTool(
      'fio',
      [
        '--name=verify',
        '--ioengine=nbd',
        `--uri=${uri('scratch')}`,
        '--rw=randwrite',
        '--bs=4k',
        '--size=8M',
        '--iodepth=16',
        '--verify=crc32c',
        '--do_verify=1',
        '--verify_fatal=1',
        '--output-format=json',
      ],
      { timeoutMs: 120_000 },
    );
    expect(r.stderr).not.toMatch(/verify: bad|error/i);
    expect(r.code).toBe(0);
    const job = (
      JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as {
        jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[];
      }
    ).jobs[0]!;
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(8 * MiB);
    expect(job.read.io_bytes).toBe(8 * MiB); // the verify pass read everything back
  });
});

describe('TCP', () => {
  it('serves the same exports over TCP on an ephemeral port', async () => {
    const tcp = await startNbdServer({
      host: '127.0.0.1',
      port: 0,
      lookup: (name) => exports.get(name) ?? { refuse: 'unknown', message: 'no' },
    });
    try {
      expect(tcp.address()).toMatch(/^127\.0\.0\.1:\d+$/);
      const r = await runTool('nbdinfo', ['--size', tcp.uri('disk')]);
      expect(r).toMatchObject({ code: 0 });
      expect(r.stdout.trim()).toBe(String(16 * MiB));
    } finally {
      await tcp.close();
    }
  });
});

describe('broken clients', () => {
  it('drops a client that sends a bad request magic, and keeps serving others', async () => {
    const { client } = await RawNbdClient.open({ path: sock }, 'disk');
    const bad = Buffer.alloc(28);
    bad.writeUInt32BE(0x12560953, 0); // the historic request magic, reserved by proto.md
    client.socket.write(bad);
    expect(await client.closedWithin(2000)).toBe(true);
    expect(client.pending).toBe(0); // no reply was sent for it

    const r = await runTool('nbdinfo', ['--size', uri('disk')]);
    expect(r).toMatchObject({ code: 0, stdout: `${16 * MiB}\n` });
  });

  it('answers a read past the end with NBD_EINVAL and keeps the connection', async () => {
    const { client } = await RawNbdClient.open({ path: sock }, 'disk');
    const past = client.send({ command: Cmd.NBD_CMD_READ, offset: 16 * MiB - 512, length: 1024 });
    expect(await client.reply()).toEqual({ error: NbdErr.NBD_EINVAL, handle: past, data: Buffer.alloc(0) });
    const ok = client.send({ command: Cmd.NBD_CMD_READ, offset: 16 * MiB - 512, length: 512 });
    const reply = await client.reply(() => 512);
    expect(reply).toMatchObject({ error: 0, handle: ok });
    expect(reply.data).toEqual((await readFile(join(dir, 'disk.img'))).subarray(16 * MiB - 512));
    client.send({ command: Cmd.NBD_CMD_DISC });
    expect(await client.closedWithin(2000)).toBe(true);
  });

  it('ends with no client left connected', async () => {
    for (let i = 0; i < 50 && server.clientCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(server.clientCount).toBe(0);
  });
});
