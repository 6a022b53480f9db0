// src/nbd's protocol behaviour observed byte for byte through a real unix socket: option
// haggling, request validation, FLUSH ordering, out-of-order replies, backpressure, backend
// errors, NBD_CMD_DISC and server shutdown. The backend is a real file behind a gate that can
// hold a call, so that ordering and concurrency are observable.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  nbdCodec,
  nbdWire,
  startNbdServer,
  type ExportLookup,
  type NbdServer,
  type StartNbdServerOptions,
} from '../../src/nbd/index.ts';
import { FileExport } from './support/file-export.ts';
import { GatedExport } from './support/gated-export.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';

const { ClientFlag, Cmd, CmdFlag, Info, NbdErr, Opt, Rep, TransmissionFlag: TF } = nbdWire;
const MiB = 1024 * 1024;
const SIZE = 4 * MiB;

let dir: string;
let sock: string;
let file: FileExport;
let roFile: FileExport;
let alignedFile: FileExport;
let disk: GatedExport;
let server: NbdServer | undefined;
const clients: RawNbdClient[] = [];

const lookup: ExportLookup = (name) => {
  switch (name) {
    case 'disk':
      return disk;
    case 'ro':
      return roFile;
    case 'aligned':
      return alignedFile;
    case 'secondary':
      return { refuse: 'policy', message: 'Resource r0 is Secondary: wrong medium type' };
    default:
      return { refuse: 'unknown', message: `No export named ${name}` };
  }
};

async function serve(opts: Partial<StartNbdServerOptions> = {}): Promise<NbdServer> {
  server = await startNbdServer({ path: sock, lookup, listExports: () => ['disk', 'ro'], ...opts });
  return server;
}

async function open(name = 'disk', infos: number[] = []): Promise<RawNbdClient> {
  const { client, replies } = await RawNbdClient.open({ path: sock }, name, infos);
  clients.push(client);
  expect(replies.at(-1)!.reply).toBe(Rep.NBD_REP_ACK);
  return client;
}

async function connect(
  flags: number = ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES,
): Promise<RawNbdClient> {
  const client = await RawNbdClient.connect({ path: sock });
  clients.push(client);
  await client.readGreeting();
  client.sendClientFlags(flags);
  return client;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-nbd-server-'));
  sock = join(dir, 'nbd.sock');
  file = await FileExport.open(join(dir, 'disk.img'), { size: SIZE, description: 'gated disk' });
  roFile = await FileExport.open(join(dir, 'disk.img'), { readOnly: true });
  alignedFile = await FileExport.open(join(dir, 'aligned.img'), { size: MiB, minBlockSize: 4096 });
  disk = new GatedExport(file);
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  disk.releaseAll();
  await server?.close();
  server = undefined;
  await file.close();
  await roFile.close();
  await alignedFile.close();
  await rm(dir, { recursive: true, force: true });
});

describe('handshake', () => {
  beforeEach(() => serve());

  it('greets with NBDMAGIC, IHAVEOPT and exactly FIXED_NEWSTYLE | NO_ZEROES', async () => {
    const client = await RawNbdClient.connect({ path: sock });
    clients.push(client);
    expect(await client.readGreeting()).toBe(
      nbdWire.HandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE | nbdWire.HandshakeFlag.NBD_FLAG_NO_ZEROES,
    );
  });

  it('answers NBD_OPT_INFO with INFO_EXPORT, NAME, DESCRIPTION and BLOCK_SIZE, then still accepts NBD_OPT_GO', async () => {
    const client = await connect();
    const replies = await client.option(
      Opt.NBD_OPT_INFO,
      nbdCodec.encodeInfoRequest({
        name: 'disk',
        infos: [Info.NBD_INFO_NAME, Info.NBD_INFO_DESCRIPTION, Info.NBD_INFO_BLOCK_SIZE],
      }),
    );
    expect(replies.map((r) => r.reply)).toEqual([
      Rep.NBD_REP_INFO,
      Rep.NBD_REP_INFO,
      Rep.NBD_REP_INFO,
      Rep.NBD_REP_INFO,
      Rep.NBD_REP_ACK,
    ]);
    const byType = new Map(replies.slice(0, -1).map((r) => [r.data.readUInt16BE(0), r.data]));
    const exp = byType.get(Info.NBD_INFO_EXPORT)!;
    expect(exp).toHaveLength(12);
    expect(Number(exp.readBigUInt64BE(2))).toBe(SIZE);
    expect(exp.readUInt16BE(10)).toBe(
      TF.NBD_FLAG_HAS_FLAGS |
        TF.NBD_FLAG_SEND_FLUSH |
        TF.NBD_FLAG_SEND_FUA |
        TF.NBD_FLAG_SEND_TRIM |
        TF.NBD_FLAG_SEND_WRITE_ZEROES,
    );
    expect(byType.get(Info.NBD_INFO_NAME)!.toString('utf8', 2)).toBe('disk');
    expect(byType.get(Info.NBD_INFO_DESCRIPTION)!.toString('utf8', 2)).toBe('gated disk');
    const bs = byType.get(Info.NBD_INFO_BLOCK_SIZE)!;
    expect([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)]).toEqual([1, 4096, 32 * MiB]);

    const go = await client.option(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'disk', infos: [] }));
    expect(go.at(-1)!.reply).toBe(Rep.NBD_REP_ACK);
    const h = client.send({ command: Cmd.NBD_CMD_FLUSH });
    expect(await client.reply()).toMatchObject({ error: 0, handle: h });
  });

  it('refuses a Secondary with NBD_REP_ERR_POLICY and the message, then lets the client continue', async () => {
    const client = await connect();
    const [refusal] = await client.option(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'secondary', infos: [] }));
    expect(refusal).toEqual({
      option: Opt.NBD_OPT_GO,
      reply: Rep.NBD_REP_ERR_POLICY,
      data: Buffer.from('Resource r0 is Secondary: wrong medium type'),
    });
    const [unknown] = await client.option(Opt.NBD_OPT_INFO, nbdCodec.encodeInfoRequest({ name: 'nope', infos: [] }));
    expect(unknown!.reply).toBe(Rep.NBD_REP_ERR_UNKNOWN);
    expect(
      (await client.option(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'disk', infos: [] }))).at(-1)!.reply,
    ).toBe(Rep.NBD_REP_ACK);
  });

  it('answers unsupported options with NBD_REP_ERR_UNSUP, consuming their data, and stays in sync', async () => {
    const client = await connect();
    for (const option of [
      Opt.NBD_OPT_STRUCTURED_REPLY,
      Opt.NBD_OPT_STARTTLS,
      Opt.NBD_OPT_SET_META_CONTEXT,
      Opt.NBD_OPT_EXTENDED_HEADERS,
      0xdead,
    ]) {
      const [r] = await client.option(option, randomBytes(100));
      expect(r).toMatchObject({ option, reply: Rep.NBD_REP_ERR_UNSUP });
    }
    // An unknown option too long to buffer is skipped as it streams in.
    const [big] = await client.option(0xbeef, randomBytes(1024 * 1024));
    expect(big).toMatchObject({ option: 0xbeef, reply: Rep.NBD_REP_ERR_UNSUP });
    expect(
      (await client.option(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'disk', infos: [] }))).at(-1)!.reply,
    ).toBe(Rep.NBD_REP_ACK);
  });

  it('rejects malformed option data with NBD_REP_ERR_INVALID and oversized data with NBD_REP_ERR_TOO_BIG', async () => {
    const client = await connect();
    const [badGo] = await client.option(Opt.NBD_OPT_GO, Buffer.from([0, 0, 0, 50, 0x61, 0, 0]));
    expect(badGo!.reply).toBe(Rep.NBD_REP_ERR_INVALID);
    const [listWithData] = await client.option(Opt.NBD_OPT_LIST, Buffer.from('x'));
    expect(listWithData!.reply).toBe(Rep.NBD_REP_ERR_INVALID);
    const [hugeGo] = await client.option(Opt.NBD_OPT_GO, Buffer.alloc(100 * 1024));
    expect(hugeGo!.reply).toBe(Rep.NBD_REP_ERR_TOO_BIG);
    const list = await client.option(Opt.NBD_OPT_LIST);
    expect(list.map((r) => r.reply)).toEqual([Rep.NBD_REP_SERVER, Rep.NBD_REP_SERVER, Rep.NBD_REP_ACK]);
    expect(list.slice(0, 2).map((r) => r.data.toString('utf8', 4, 4 + r.data.readUInt32BE(0)))).toEqual(['disk', 'ro']);
  });

  it('replies ACK to NBD_OPT_ABORT and closes', async () => {
    const client = await connect();
    expect(await client.option(Opt.NBD_OPT_ABORT)).toEqual([
      { option: Opt.NBD_OPT_ABORT, reply: Rep.NBD_REP_ACK, data: Buffer.alloc(0) },
    ]);
    expect(await client.closedWithin(2000)).toBe(true);
  });

  it('drops a client that sets unknown client flags', async () => {
    const client = await connect(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | 0x100);
    expect(await client.closedWithin(2000)).toBe(true);
  });

  it('drops a client that never finishes the handshake, but not one that has', async () => {
    await server!.close();
    await serve({ handshakeTimeoutMs: 200 });
    const idle = await connect();
    const active = await open();
    expect(await idle.closedWithin(2000)).toBe(true);
    await sleep(200);
    const h = active.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 512 });
    expect(await active.reply(() => 512)).toMatchObject({ error: 0, handle: h });
  });

  it('drops a client that sends an endless stream of options', async () => {
    const client = await connect();
    for (let i = 0; i < 100; i++) client.sendOption(Opt.NBD_OPT_STRUCTURED_REPLY);
    expect(await client.closedWithin(2000)).toBe(true);
  });

  it.each([
    [true, 10],
    [false, 134],
  ])('enters transmission with NBD_OPT_EXPORT_NAME (NO_ZEROES %p: %i bytes)', async (noZeroes, bytes) => {
    const client = await connect(
      ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? ClientFlag.NBD_FLAG_C_NO_ZEROES : 0),
    );
    client.sendOption(Opt.NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    const reply = await client.read(bytes);
    expect(Number(reply.readBigUInt64BE(0))).toBe(SIZE);
    expect(reply.readUInt16BE(8) & TF.NBD_FLAG_HAS_FLAGS).toBe(TF.NBD_FLAG_HAS_FLAGS);
    expect(reply.subarray(10).every((b) => b === 0)).toBe(true);
    const h = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 4096 });
    expect(await client.reply(() => 4096)).toMatchObject({ error: 0, handle: h });
    expect(client.pending).toBe(0);
  });

  it('drops the connection when NBD_OPT_EXPORT_NAME names a refused export (it cannot carry an error)', async () => {
    const client = await connect();
    client.sendOption(Opt.NBD_OPT_EXPORT_NAME, Buffer.from('secondary'));
    expect(await client.closedWithin(2000)).toBe(true);
    expect(client.pending).toBe(0);
  });
});

describe('requests', () => {
  beforeEach(() => serve());

  it('writes, reads back, honours FUA and NO_HOLE, and trims', async () => {
    const client = await open();
    const data = randomBytes(64 * 1024);
    const w = client.send({ command: Cmd.NBD_CMD_WRITE, flags: CmdFlag.NBD_CMD_FLAG_FUA, offset: 8192, data });
    expect(await client.reply()).toEqual({ error: 0, handle: w, data: Buffer.alloc(0) });
    expect(disk.fuaSeen).toEqual([true]);
    const r = client.send({ command: Cmd.NBD_CMD_READ, offset: 8192, length: data.length });
    expect((await client.reply(() => data.length)).data).toEqual(data);
    expect((await readFile(join(dir, 'disk.img'))).subarray(8192, 8192 + data.length)).toEqual(data);

    const z = client.send({
      command: Cmd.NBD_CMD_WRITE_ZEROES,
      flags: CmdFlag.NBD_CMD_FLAG_NO_HOLE,
      offset: 8192,
      length: 4096,
    });
    expect(await client.reply()).toMatchObject({ error: 0, handle: z });
    expect(disk.zeroFlags).toEqual([{ fua: false, noHole: true }]);
    const t = client.send({ command: Cmd.NBD_CMD_TRIM, offset: 0, length: SIZE });
    expect(await client.reply()).toMatchObject({ error: 0, handle: t });
    const r2 = client.send({ command: Cmd.NBD_CMD_READ, offset: 8192, length: 8192 });
    const back = await client.reply(() => 8192);
    expect(back.handle).toBe(r2);
    expect(back.data).toEqual(Buffer.concat([Buffer.alloc(4096), data.subarray(4096, 8192)]));
    expect(r).toBe(2n);
  });

  it.each([
    ['a read past the end', { command: Cmd.NBD_CMD_READ, offset: SIZE, length: 512 }, NbdErr.NBD_EINVAL],
    [
      'a write past the end',
      { command: Cmd.NBD_CMD_WRITE, offset: SIZE - 512, data: randomBytes(1024) },
      NbdErr.NBD_ENOSPC,
    ],
    [
      'a write zeroes past the end',
      { command: Cmd.NBD_CMD_WRITE_ZEROES, offset: SIZE - 512, length: 1024 },
      NbdErr.NBD_ENOSPC,
    ],
    ['a trim past the end', { command: Cmd.NBD_CMD_TRIM, offset: SIZE - 512, length: 1024 }, NbdErr.NBD_EINVAL],
    [
      'a read above the maximum block size',
      { command: Cmd.NBD_CMD_READ, offset: 0, length: 32 * MiB + 1 },
      NbdErr.NBD_EINVAL,
    ],
    ['an unknown command', { command: 0x55, offset: 0, length: 1 }, NbdErr.NBD_EINVAL],
    ['NBD_CMD_BLOCK_STATUS', { command: Cmd.NBD_CMD_BLOCK_STATUS, offset: 0, length: 1 }, NbdErr.NBD_EINVAL],
    [
      'a read with the DF flag',
      { command: Cmd.NBD_CMD_READ, flags: CmdFlag.NBD_CMD_FLAG_DF, offset: 0, length: 1 },
      NbdErr.NBD_EINVAL,
    ],
    ['a flush with an offset', { command: Cmd.NBD_CMD_FLUSH, offset: 512 }, NbdErr.NBD_EINVAL],
  ])('answers %s with an error, never reaching the backend, and stays in sync', async (_, req, error) => {
    const client = await open();
    const h = client.send(req);
    expect(await client.reply()).toEqual({ error, handle: h, data: Buffer.alloc(0) });
    const ok = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 512 });
    expect(await client.reply(() => 512)).toMatchObject({ error: 0, handle: ok });
    expect(disk.events).toEqual(['read@0 start', 'read@0 done']);
  });

  it('consumes the payload of a write above the maximum block size without buffering it, and answers NBD_EINVAL', async () => {
    const client = await open();
    const h = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: Buffer.alloc(32 * MiB + 4096, 0xaa) });
    expect(await client.reply(() => 0, 20_000)).toEqual({ error: NbdErr.NBD_EINVAL, handle: h, data: Buffer.alloc(0) });
    const ok = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 16 });
    expect(await client.reply(() => 16)).toEqual({ error: 0, handle: ok, data: Buffer.alloc(16) });
    expect(disk.count('write')).toBe(0);
  });

  it('answers writes to a read-only export with NBD_EPERM, consuming the payload', async () => {
    const client = await open('ro');
    const w = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: Buffer.alloc(8192, 1) });
    expect(await client.reply()).toMatchObject({ error: NbdErr.NBD_EPERM, handle: w });
    const t = client.send({ command: Cmd.NBD_CMD_TRIM, offset: 0, length: 4096 });
    expect(await client.reply()).toMatchObject({ error: NbdErr.NBD_EPERM, handle: t });
    const r = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 8192 });
    expect(await client.reply(() => 8192)).toEqual({ error: 0, handle: r, data: Buffer.alloc(8192) });
  });

  it('answers misaligned requests on an export with a minimum block size with NBD_EINVAL', async () => {
    const client = await open('aligned');
    const bad = client.send({ command: Cmd.NBD_CMD_READ, offset: 512, length: 4096 });
    expect(await client.reply()).toMatchObject({ error: NbdErr.NBD_EINVAL, handle: bad });
    const good = client.send({ command: Cmd.NBD_CMD_READ, offset: 4096, length: 4096 });
    expect(await client.reply(() => 4096)).toMatchObject({ error: 0, handle: good });
  });

  it('succeeds zero-length reads and writes without calling the backend', async () => {
    const client = await open();
    const r = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 0 });
    expect(await client.reply()).toEqual({ error: 0, handle: r, data: Buffer.alloc(0) });
    const w = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: Buffer.alloc(0) });
    expect(await client.reply()).toEqual({ error: 0, handle: w, data: Buffer.alloc(0) });
    expect(disk.events).toEqual([]);
  });

  it.each([
    ['ENOSPC', NbdErr.NBD_ENOSPC],
    ['EPERM', NbdErr.NBD_EPERM],
    ['EIO', NbdErr.NBD_EIO],
    [null, NbdErr.NBD_EIO],
  ])('maps a backend failure with code %p to its NBD error and keeps serving', async (code, error) => {
    const client = await open();
    const held = disk.holdNext('write');
    const w = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: randomBytes(4096) });
    await held.started;
    held.fail(code);
    expect(await client.reply()).toEqual({ error, handle: w, data: Buffer.alloc(0) });
    const w2 = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: randomBytes(4096) });
    expect(await client.reply()).toMatchObject({ error: 0, handle: w2 });
  });

  it('answers a failed read with an error and no payload', async () => {
    const client = await open();
    const held = disk.holdNext('read');
    const r = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 4096 });
    await held.started;
    held.fail('EIO');
    expect(await client.reply(() => 4096)).toEqual({ error: NbdErr.NBD_EIO, handle: r, data: Buffer.alloc(0) });
    const r2 = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 8 });
    expect(await client.reply(() => 8)).toMatchObject({ error: 0, handle: r2 });
  });
});

describe('ordering and concurrency', () => {
  it('replies out of order: a fast read overtakes a slow one', async () => {
    await serve();
    const client = await open();
    const held = disk.holdNext('read');
    const slow = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 512 });
    await held.started;
    const fast = client.send({ command: Cmd.NBD_CMD_READ, offset: 4096, length: 512 });
    expect((await client.reply(() => 512)).handle).toBe(fast);
    held.release();
    expect((await client.reply(() => 512)).handle).toBe(slow);
  });

  it('does not flush (nor reply to FLUSH) before the writes in flight when it arrived have completed', async () => {
    await serve();
    const client = await open();
    const held = disk.holdNext('write');
    const w = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: randomBytes(4096) });
    await held.started;
    const f = client.send({ command: Cmd.NBD_CMD_FLUSH });
    await sleep(100);
    expect(disk.count('flush')).toBe(0);
    expect(client.pending).toBe(0);
    held.release();
    expect((await client.reply()).handle).toBe(w);
    expect(await client.reply()).toMatchObject({ error: 0, handle: f });
    expect(disk.events).toEqual(['write@0 start', 'write@0 done', 'flush start', 'flush done']);
  });

  it('does not make FLUSH wait for writes that arrive after it', async () => {
    await serve();
    const client = await open();
    const f = client.send({ command: Cmd.NBD_CMD_FLUSH });
    const held = disk.holdNext('write');
    const w = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: randomBytes(512) });
    await held.started;
    expect(await client.reply()).toMatchObject({ error: 0, handle: f });
    held.release();
    expect(await client.reply()).toMatchObject({ error: 0, handle: w });
  });

  it('hands at most maxInFlight requests to the backend and pauses the rest', async () => {
    await serve({ maxInFlight: 2 });
    const client = await open();
    disk.holdAll('read');
    const handles = Array.from({ length: 6 }, (_, i) =>
      client.send({ command: Cmd.NBD_CMD_READ, offset: i * 4096, length: 4096 }),
    );
    await sleep(150);
    expect(disk.count('read')).toBe(2);
    disk.releaseAll();
    const got = new Set<bigint>();
    for (let i = 0; i < handles.length; i++) got.add((await client.reply(() => 4096)).handle);
    expect(got).toEqual(new Set(handles));
  });

  it('bounds the bytes in flight as well as the count', async () => {
    await serve({ maxInFlightBytes: 64 * 1024 });
    const client = await open();
    disk.holdAll('write');
    for (let i = 0; i < 4; i++)
      client.send({ command: Cmd.NBD_CMD_WRITE, offset: i * 65536, data: randomBytes(40 * 1024) });
    await sleep(150);
    expect(disk.count('write')).toBe(2); // 40 KiB + 40 KiB crosses 64 KiB: the third waits
    disk.releaseAll();
    for (let i = 0; i < 4; i++) expect((await client.reply()).error).toBe(0);
  });

  it('answers every outstanding request before closing on NBD_CMD_DISC', async () => {
    await serve();
    const client = await open();
    const held = disk.holdNext('write');
    const w = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: randomBytes(4096) });
    await held.started;
    client.send({ command: Cmd.NBD_CMD_DISC });
    await sleep(50);
    expect(await client.closedWithin(50)).toBe(false);
    held.release();
    expect(await client.reply()).toMatchObject({ error: 0, handle: w });
    expect(await client.closedWithin(2000)).toBe(true);
  });

  it('still answers a client that half-closes after sending', async () => {
    await serve();
    const client = await open();
    const r = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 4096 });
    client.socket.end();
    expect(await client.reply(() => 4096)).toMatchObject({ error: 0, handle: r });
    expect(await client.closedWithin(2000)).toBe(true);
  });
});

describe('server lifecycle', () => {
  it('disconnectAll waits for in-flight writes, errors new work with SHUTDOWN, then reopens', async () => {
    const srv = await serve();
    const client = await open();
    const held = disk.holdNext('write');
    const w = client.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: randomBytes(4096) });
    await held.started;
    let done = false;
    const disconnecting = srv.disconnectAll().then(() => (done = true));

    // A newcomer is refused while the shutdown runs.
    const newcomer = await connect();
    const [refused] = await newcomer.option(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'disk', infos: [] }));
    expect(refused!.reply).toBe(Rep.NBD_REP_ERR_SHUTDOWN);
    await sleep(50);
    expect(done).toBe(false);
    expect(await client.closedWithin(10)).toBe(false);

    held.release();
    expect(await client.reply()).toEqual({ error: 0, handle: w, data: Buffer.alloc(0) });
    expect(await client.closedWithin(2000)).toBe(true);
    await disconnecting;
    expect(disk.events).toEqual(['write@0 start', 'write@0 done']);

    // Opens are accepted again afterwards.
    const again = await open();
    const r = again.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 4096 });
    expect(await again.reply(() => 4096)).toMatchObject({ error: 0, handle: r });
  });

  it('disconnectAll answers requests received but not yet started with NBD_ESHUTDOWN', async () => {
    const srv = await serve({ maxInFlight: 1 });
    const client = await open();
    const held = disk.holdNext('read');
    const first = client.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 512 });
    await held.started;
    const queued = client.send({ command: Cmd.NBD_CMD_READ, offset: 512, length: 512 });
    await sleep(50);
    const disconnecting = srv.disconnectAll();
    expect(await client.reply()).toEqual({ error: NbdErr.NBD_ESHUTDOWN, handle: queued, data: Buffer.alloc(0) });
    held.release();
    expect(await client.reply(() => 512)).toMatchObject({ error: 0, handle: first });
    await disconnecting;
    expect(srv.clientCount).toBe(0);
  });

  it('close() removes the socket file, and a stale socket left by a killed process is replaced', async () => {
    const srv = await serve();
    expect(existsSync(sock)).toBe(true);
    await srv.close();
    server = undefined;
    expect(existsSync(sock)).toBe(false);

    // A process that dies without closing leaves its socket file behind.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(sock)}, () => console.log('up'))`,
    ]);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(existsSync(sock)).toBe(true);

    await serve();
    const client = await open();
    const f = client.send({ command: Cmd.NBD_CMD_FLUSH });
    expect(await client.reply()).toMatchObject({ error: 0, handle: f });
  });

  it('refuses to start on a socket path another live server holds', async () => {
    await serve();
    await expect(startNbdServer({ path: sock, lookup })).rejects.toMatchObject({ code: 'EADDRINUSE' });
  });

  it('needs exactly one of path and port', async () => {
    await expect(startNbdServer({ lookup })).rejects.toMatchObject({ code: 'TANDEM_ERR_NBD_BAD_SERVER_OPTIONS' });
    await expect(startNbdServer({ lookup, path: sock, port: 0 })).rejects.toMatchObject({
      code: 'TANDEM_ERR_NBD_BAD_SERVER_OPTIONS',
    });
  });
});
