// Malformed and hostile input over a raw socket against a running tandem engine's export
// (a StandAlone Primary started by tandemadm): truncated headers, bad magic, requests past
// the end, huge lengths, unknown commands and options, a client that disconnects in the
// middle of a write, and thousands of connections opened and dropped. Each gets the spec's
// answer or a clean disconnect; the engine stays up and serves; and the device's contents
// are exactly what the accepted writes made them, byte for byte.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { jest } from '@jest/globals';
import { nbdCodec, nbdWire } from '../../src/nbd/index.ts';
import { tool, type Pair } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { deviceSha256, startTandemExport } from './support/tandem-export.ts';

jest.setTimeout(180_000);

const { Cmd, NbdErr, Opt, Rep, ClientFlag } = nbdWire;
const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

let pair: Pair;
let sock: string;
let expected: string;

async function open(): Promise<RawNbdClient> {
  const { client, replies } = await RawNbdClient.open({ path: sock }, 'mysql');
  expect(replies.at(-1)!.reply).toBe(Rep.NBD_REP_ACK);
  return client;
}

/** The engine still serves a fresh, well-behaved client. */
async function stillServes(): Promise<void> {
  const c = await open();
  const h = c.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 4096 });
  const r = await c.reply(() => 4096);
  expect([r.error, r.handle]).toEqual([0, h]);
  c.destroy();
}

beforeAll(async () => {
  pair = await startTandemExport({ mib: SIZE / MiB });
  sock = pair.nbdSocket('master');
  // Known contents: random data everywhere, written by a real client and flushed.
  const data = randomBytes(SIZE);
  const src = join(pair.dir, 'pattern.bin');
  await writeFile(src, data);
  await tool('nbdcopy', ['--flush', src, pair.nbdUri('master')]);
  expected = sha(data);
  expect(await deviceSha256(pair.nbdUri('master'), join(pair.dir, 'check0.bin'))).toBe(expected);
});

afterAll(async () => {
  await pair?.destroy();
});

describe('hostile NBD clients against a tandem export', () => {
  it('answers requests past the end with EINVAL (read) and ENOSPC (write), consuming the payload', async () => {
    const c = await open();
    const r1 = c.send({ command: Cmd.NBD_CMD_READ, offset: SIZE - 4096, length: 8192 });
    const w1 = c.send({ command: Cmd.NBD_CMD_WRITE, offset: SIZE, data: Buffer.alloc(4096, 0xff) });
    const w2 = c.send({
      command: Cmd.NBD_CMD_WRITE,
      offset: Number.MAX_SAFE_INTEGER - 4095,
      data: Buffer.alloc(512, 0xff),
    });
    // offset + length overflowing 64 bits on the wire
    const r2 = c.send({ command: Cmd.NBD_CMD_READ, offset: Number.MAX_SAFE_INTEGER, length: 0xffffffff });
    const ok = c.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 512 });
    const got = new Map<bigint, number>();
    for (let i = 0; i < 5; i++) {
      const r = await c.reply((h) => (h === ok ? 512 : 0));
      got.set(r.handle, r.error);
    }
    expect(got).toEqual(
      new Map([
        [r1, NbdErr.NBD_EINVAL],
        [w1, NbdErr.NBD_ENOSPC],
        [w2, NbdErr.NBD_ENOSPC],
        [r2, NbdErr.NBD_EINVAL],
        [ok, 0],
      ]),
    );
    c.destroy();
  });

  it('answers huge lengths with EINVAL and keeps the stream in sync after a 33 MiB write payload', async () => {
    const c = await open();
    const huge = c.send({ command: Cmd.NBD_CMD_READ, offset: 0, length: 0xffffffff });
    // A write above the 32 MiB maximum block size: the payload is consumed, not buffered.
    const big = c.send({ command: Cmd.NBD_CMD_WRITE, offset: 0, data: Buffer.alloc(33 * MiB, 0xee) });
    const trimHuge = c.send({ command: Cmd.NBD_CMD_TRIM, offset: 0, length: 0xffffffff });
    const after = c.send({ command: Cmd.NBD_CMD_READ, offset: 4096, length: 4096 });
    const got = new Map<bigint, number>();
    for (let i = 0; i < 4; i++) {
      const r = await c.reply((h) => (h === after ? 4096 : 0), 30_000);
      got.set(r.handle, r.error);
    }
    expect(got.get(huge)).toBe(NbdErr.NBD_EINVAL);
    expect(got.get(big)).toBe(NbdErr.NBD_EINVAL);
    expect(got.get(trimHuge)).toBe(NbdErr.NBD_EINVAL); // a TRIM past the end of the device
    expect(got.get(after)).toBe(0);
    c.destroy();
  });

  it('answers unknown commands and command flags with EINVAL', async () => {
    const c = await open();
    const handles = [
      c.send({ command: 99, offset: 0, length: 4096 }),
      c.send({ command: Cmd.NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 }),
      c.send({ command: Cmd.NBD_CMD_READ, flags: 1 << 9, offset: 0, length: 4096 }),
    ];
    for (const h of handles) expect(await c.reply()).toMatchObject({ handle: h, error: NbdErr.NBD_EINVAL });
    c.destroy();
    await stillServes();
  });

  it('answers unknown and oversized options per spec and still opens the export afterwards', async () => {
    const c = await RawNbdClient.connect({ path: sock });
    await c.readGreeting();
    c.sendClientFlags(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES);
    expect((await c.option(0x1234, Buffer.alloc(100)))[0]!.reply).toBe(Rep.NBD_REP_ERR_UNSUP);
    expect((await c.option(Opt.NBD_OPT_STARTTLS))[0]!.reply).toBe(Rep.NBD_REP_ERR_UNSUP);
    expect((await c.option(Opt.NBD_OPT_GO, Buffer.alloc(200 * 1024)))[0]!.reply).toBe(Rep.NBD_REP_ERR_TOO_BIG);
    expect((await c.option(Opt.NBD_OPT_GO, Buffer.from([0, 0, 0, 9, 0])))[0]!.reply).toBe(Rep.NBD_REP_ERR_INVALID);
    expect((await c.option(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'nope', infos: [] })))[0]!.reply).toBe(
      Rep.NBD_REP_ERR_UNKNOWN,
    );
    const go = await c.option(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'mysql', infos: [] }));
    expect(go.at(-1)!.reply).toBe(Rep.NBD_REP_ACK);
    c.destroy();
  });

  it('drops a client with bad magic (handshake or transmission), too many options, or a truncated header', async () => {
    const badOpt = await RawNbdClient.connect({ path: sock });
    await badOpt.readGreeting();
    badOpt.sendClientFlags(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE);
    badOpt.socket.write(Buffer.alloc(16, 0x41));
    expect(await badOpt.closedWithin(5000)).toBe(true);

    const badReq = await open();
    const req = nbdCodec.encodeRequest({
      command: Cmd.NBD_CMD_WRITE,
      flags: 0,
      handle: 1n,
      offset: 0,
      length: 4096,
      data: Buffer.alloc(4096, 0xcc),
    });
    req.writeUInt32BE(0xdeadbeef, 0);
    badReq.socket.write(req);
    expect(await badReq.closedWithin(5000)).toBe(true);

    const chatty = await RawNbdClient.connect({ path: sock });
    await chatty.readGreeting();
    chatty.sendClientFlags(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE);
    for (let i = 0; i < 200 && !chatty.socket.destroyed; i++) chatty.sendOption(0x4242);
    expect(await chatty.closedWithin(5000)).toBe(true);

    // 20 bytes of a 28-byte header, then the client goes away
    const truncated = await open();
    truncated.socket.end(
      nbdCodec
        .encodeRequest({
          command: Cmd.NBD_CMD_WRITE,
          flags: 0,
          handle: 2n,
          offset: 0,
          length: 4096,
          data: Buffer.alloc(4096),
        })
        .subarray(0, 20),
    );
    expect(await truncated.closedWithin(5000)).toBe(true);
    await stillServes();
  });

  it('never applies a write whose client disconnected before sending all of its payload', async () => {
    for (const cut of [28, 28 + 1, 28 + 4095, 28 + 512 * 1024]) {
      const c = await open();
      const req = nbdCodec.encodeRequest({
        command: Cmd.NBD_CMD_WRITE,
        flags: 0,
        handle: 7n,
        offset: 4 * MiB,
        length: MiB,
        data: Buffer.alloc(MiB, 0x99),
      });
      c.socket.write(req.subarray(0, cut));
      await new Promise((r) => setTimeout(r, 50));
      c.destroy();
    }
    await stillServes();
  });

  it('survives thousands of connections opened and dropped at every stage of the handshake', async () => {
    const stages = ['connect', 'greeting', 'flags', 'half-option', 'opened'] as const;
    const one = async (stage: (typeof stages)[number]): Promise<void> => {
      const s = net.connect({ path: sock });
      await new Promise<void>((resolve, reject) => {
        s.once('connect', resolve);
        s.once('error', reject);
      });
      if (stage !== 'connect') await new Promise((r) => s.once('data', r));
      if (stage === 'flags' || stage === 'half-option' || stage === 'opened')
        s.write(nbdCodec.encodeClientFlags(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES));
      if (stage === 'half-option')
        s.write(
          nbdCodec
            .encodeOption(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'mysql', infos: [] }))
            .subarray(0, 10),
        );
      if (stage === 'opened') {
        s.write(nbdCodec.encodeOption(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name: 'mysql', infos: [] })));
        s.write(
          nbdCodec.encodeRequest({
            command: Cmd.NBD_CMD_READ,
            flags: 0,
            handle: 1n,
            offset: 0,
            length: 65536,
            data: null,
          }),
        );
      }
      s.destroy();
    };
    const total = 3000;
    for (let i = 0; i < total; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => one(stages[(i + j) % stages.length]!).catch(() => {})));
    }
    await stillServes();
    const st = await pair.status('master');
    expect(st.role).toBe('Primary');
  });

  it('leaves the device exactly as the accepted writes made it', async () => {
    // Nothing above was a valid write: the contents are the pattern written in beforeAll.
    expect(await deviceSha256(pair.nbdUri('master'), join(pair.dir, 'check1.bin'))).toBe(expected);
    // and the backing file agrees (what a client reads is what is on disk)
    expect(sha(await pair.diskBytes('master', 0, SIZE))).toBe(expected);
  });
});
