import fc from 'fast-check';
import {
  decodeNbdString,
  decodeOptionReplyHeader,
  decodeSimpleReplyHeader,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeInfoString,
  encodeNbdString,
  encodeOption,
  encodeOptionReply,
  encodeRepServer,
  encodeRequest,
  encodeSimpleReply,
  HandshakeParser,
  parseInfoRequest,
  RequestParser,
  type HandshakeFrame,
  type NbdRequest,
  type RequestFrame,
} from './codec.ts';
import { ClientFlag, Cmd, CmdFlag, HandshakeFlag, Info, NbdErr, Opt, Rep } from './constants.ts';

const MAX_PAYLOAD = 64;

/** Feeds `bytes` cut at the given offsets and returns every frame. */
function feedSplit<F>(parser: { feed(chunk: Buffer): F[] }, bytes: Buffer, cuts: number[]): F[] {
  const frames: F[] = [];
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    frames.push(...parser.feed(bytes.subarray(at, cut)));
    at = cut;
  }
  return frames;
}

const pattern = (n: number, seed: number): Buffer =>
  Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

// A whole handshake as a client sends it: flags, then a spread of options.
const handshakeSample = Buffer.concat([
  encodeClientFlags(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES),
  encodeOption(Opt.NBD_OPT_LIST),
  encodeOption(Opt.NBD_OPT_STRUCTURED_REPLY),
  encodeOption(
    Opt.NBD_OPT_INFO,
    encodeInfoRequest({ name: 'mysql', infos: [Info.NBD_INFO_NAME, Info.NBD_INFO_BLOCK_SIZE] }),
  ),
  encodeOption(0x1234, pattern(40, 1)), // unknown option with data
  encodeOption(Opt.NBD_OPT_GO, pattern(100, 2)), // oversized with maxOptionLength 64
  encodeOption(Opt.NBD_OPT_GO, encodeInfoRequest({ name: '', infos: [] })),
  encodeOption(Opt.NBD_OPT_EXPORT_NAME, Buffer.from('résumé')),
  encodeOption(Opt.NBD_OPT_ABORT),
]);

const handshakeExpected: HandshakeFrame[] = [
  { type: 'client-flags', flags: 3 },
  { type: 'option', option: Opt.NBD_OPT_LIST, data: Buffer.alloc(0) },
  { type: 'option', option: Opt.NBD_OPT_STRUCTURED_REPLY, data: Buffer.alloc(0) },
  { type: 'option', option: Opt.NBD_OPT_INFO, data: encodeInfoRequest({ name: 'mysql', infos: [1, 3] }) },
  { type: 'option', option: 0x1234, data: pattern(40, 1) },
  { type: 'option-oversized', option: Opt.NBD_OPT_GO, length: 100 },
  { type: 'option', option: Opt.NBD_OPT_GO, data: encodeInfoRequest({ name: '', infos: [] }) },
  { type: 'option', option: Opt.NBD_OPT_EXPORT_NAME, data: Buffer.from('résumé') },
  { type: 'option', option: Opt.NBD_OPT_ABORT, data: Buffer.alloc(0) },
];

const requestSamples: NbdRequest[] = [
  { flags: 0, command: Cmd.NBD_CMD_READ, handle: 1n, offset: 4096, length: 512, data: null },
  {
    flags: CmdFlag.NBD_CMD_FLAG_FUA,
    command: Cmd.NBD_CMD_WRITE,
    handle: 0xffffffffffffffffn,
    offset: 2 ** 40 + 3,
    length: 37,
    data: pattern(37, 3),
  },
  { flags: 0, command: Cmd.NBD_CMD_WRITE, handle: 2n, offset: 0, length: 0, data: Buffer.alloc(0) },
  { flags: 0, command: Cmd.NBD_CMD_FLUSH, handle: 3n, offset: 0, length: 0, data: null },
  {
    flags: CmdFlag.NBD_CMD_FLAG_FUA,
    command: Cmd.NBD_CMD_TRIM,
    handle: 4n,
    offset: 8192,
    length: 2 ** 32 - 1,
    data: null,
  },
  {
    flags: CmdFlag.NBD_CMD_FLAG_FUA | CmdFlag.NBD_CMD_FLAG_NO_HOLE,
    command: Cmd.NBD_CMD_WRITE_ZEROES,
    handle: 5n,
    offset: 512,
    length: 1 << 20,
    data: null,
  },
  { flags: 0, command: Cmd.NBD_CMD_WRITE, handle: 6n, offset: 0, length: MAX_PAYLOAD, data: pattern(MAX_PAYLOAD, 6) },
  { flags: 0, command: 0x77, handle: 7n, offset: 1, length: 2, data: null }, // unknown command: framed, validated later
  { flags: 0, command: Cmd.NBD_CMD_DISC, handle: 8n, offset: 0, length: 0, data: null },
];
const asFrame = (r: NbdRequest, discarded = false): RequestFrame => ({
  type: 'request',
  ...r,
  data: discarded ? null : r.data,
  discarded,
});

// A write above maxPayload: the parser consumes the payload without buffering it.
const oversizedWrite: NbdRequest = {
  flags: 0,
  command: Cmd.NBD_CMD_WRITE,
  handle: 9n,
  offset: 0,
  length: MAX_PAYLOAD + 1,
  data: pattern(MAX_PAYLOAD + 1, 9),
};
const requestStream = Buffer.concat(
  [...requestSamples.slice(0, -1), oversizedWrite, requestSamples.at(-1)!].map(encodeRequest),
);
const requestExpected = [
  ...requestSamples.slice(0, -1).map((r) => asFrame(r)),
  asFrame(oversizedWrite, true),
  asFrame(requestSamples.at(-1)!),
];

describe('HandshakeParser', () => {
  it('frames a whole handshake fed at once', () => {
    expect(new HandshakeParser({ maxOptionLength: 64 }).feed(handshakeSample)).toEqual(handshakeExpected);
  });

  it('yields the same frames when the stream is split at every byte offset', () => {
    for (let cut = 0; cut <= handshakeSample.length; cut++) {
      expect(feedSplit(new HandshakeParser({ maxOptionLength: 64 }), handshakeSample, [cut])).toEqual(
        handshakeExpected,
      );
    }
  });

  it('yields the same frames when fed one byte at a time', () => {
    const cuts = Array.from({ length: handshakeSample.length - 1 }, (_, i) => i + 1);
    expect(feedSplit(new HandshakeParser({ maxOptionLength: 64 }), handshakeSample, cuts)).toEqual(handshakeExpected);
  });

  it('each option sample alone survives every split', () => {
    const options = [
      encodeOption(
        Opt.NBD_OPT_GO,
        encodeInfoRequest({ name: 'vol', infos: [Info.NBD_INFO_EXPORT, Info.NBD_INFO_DESCRIPTION] }),
      ),
      encodeOption(Opt.NBD_OPT_EXPORT_NAME, Buffer.from('x')),
      encodeOption(Opt.NBD_OPT_STARTTLS),
    ];
    for (const opt of options) {
      const stream = Buffer.concat([encodeClientFlags(1), opt]);
      const whole = new HandshakeParser().feed(stream);
      expect(whole).toHaveLength(2);
      for (let cut = 0; cut <= stream.length; cut++)
        expect(feedSplit(new HandshakeParser(), stream, [cut])).toEqual(whole);
    }
  });

  it('returns a clean error frame, not a throw, for an option without IHAVEOPT, and then stays inert', () => {
    const p = new HandshakeParser();
    const bad = Buffer.concat([encodeClientFlags(1), Buffer.from('NOTANOPT'), Buffer.alloc(8)]);
    const frames = p.feed(bad);
    expect(frames[0]).toEqual({ type: 'client-flags', flags: 1 });
    expect(frames[1]).toMatchObject({ type: 'error', code: 'TANDEM_ERR_NBD_BAD_MAGIC' });
    expect(p.feed(encodeOption(Opt.NBD_OPT_LIST))).toEqual([]);
  });

  it('hands bytes after the last frame taken to the next phase', () => {
    const p = new HandshakeParser();
    const req = encodeRequest(requestSamples[0]!);
    p.push(
      Buffer.concat([
        encodeClientFlags(1),
        encodeOption(Opt.NBD_OPT_GO, encodeInfoRequest({ name: '', infos: [] })),
        req,
      ]),
    );
    expect(p.next()).toMatchObject({ type: 'client-flags' });
    expect(p.next()).toMatchObject({ type: 'option', option: Opt.NBD_OPT_GO });
    expect(Buffer.concat(p.takeRemaining())).toEqual(req);
  });

  it('never throws on arbitrary bytes, however they are split', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(300)), (bytes, cuts) => {
        const buf = Buffer.from(bytes);
        const sorted = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
        const frames = feedSplit(new HandshakeParser({ maxOptionLength: 32 }), buf, sorted);
        const errors = frames.filter((f) => f.type === 'error');
        expect(errors.length).toBeLessThanOrEqual(1);
        if (errors.length === 1) expect(frames.at(-1)!.type).toBe('error');
      }),
    );
  });
});

describe('RequestParser', () => {
  it('frames every request type with its payload, fed at once', () => {
    expect(new RequestParser({ maxPayload: MAX_PAYLOAD }).feed(requestStream)).toEqual(requestExpected);
  });

  it('yields the same frames when the stream is split at every byte offset', () => {
    for (let cut = 0; cut <= requestStream.length; cut++) {
      expect(feedSplit(new RequestParser({ maxPayload: MAX_PAYLOAD }), requestStream, [cut])).toEqual(requestExpected);
    }
  });

  it('yields the same frames when split at every pair of offsets around each sample', () => {
    for (const sample of [...requestSamples, oversizedWrite]) {
      const bytes = encodeRequest(sample);
      const expected = [asFrame(sample, sample === oversizedWrite)];
      for (let a = 0; a <= bytes.length; a++) {
        for (let b = a; b <= bytes.length; b += 7) {
          expect(feedSplit(new RequestParser({ maxPayload: MAX_PAYLOAD }), bytes, [a, b])).toEqual(expected);
        }
      }
    }
  });

  it('yields the same frames when fed one byte at a time', () => {
    const cuts = Array.from({ length: requestStream.length - 1 }, (_, i) => i + 1);
    expect(feedSplit(new RequestParser({ maxPayload: MAX_PAYLOAD }), requestStream, cuts)).toEqual(requestExpected);
  });

  it('hands a payload that lies in one chunk on without copying it', () => {
    const bytes = encodeRequest(requestSamples[1]!);
    const [f] = new RequestParser({ maxPayload: MAX_PAYLOAD }).feed(bytes) as RequestFrame[];
    expect(f!.data!.buffer).toBe(bytes.buffer);
  });

  it('decodes an offset beyond 2^53 to a number larger than any export size', () => {
    const bytes = encodeRequest({ ...requestSamples[0]!, offset: 0 });
    bytes.writeUInt32BE(0xffffffff, 16);
    const [f] = new RequestParser({ maxPayload: MAX_PAYLOAD }).feed(bytes) as RequestFrame[];
    expect(f!.offset).toBeGreaterThan(Number.MAX_SAFE_INTEGER);
  });

  it('returns a clean error frame, not a throw, for a bad magic, and then stays inert', () => {
    const p = new RequestParser({ maxPayload: MAX_PAYLOAD });
    const bad = encodeRequest(requestSamples[0]!);
    bad.writeUInt32BE(0x12560953, 0); // the historic request magic
    const frames = p.feed(Buffer.concat([encodeRequest(requestSamples[3]!), bad, encodeRequest(requestSamples[0]!)]));
    expect(frames).toHaveLength(2);
    expect(frames[0]).toMatchObject({ type: 'request', command: Cmd.NBD_CMD_FLUSH });
    expect(frames[1]).toMatchObject({ type: 'error', code: 'TANDEM_ERR_NBD_BAD_MAGIC' });
    expect(p.feed(encodeRequest(requestSamples[0]!))).toEqual([]);
  });

  const arbRequest: fc.Arbitrary<NbdRequest> = fc
    .record({
      flags: fc.integer({ min: 0, max: 0xffff }),
      command: fc.oneof(fc.constantFrom(0, 1, 1, 1, 2, 3, 4, 6), fc.integer({ min: 0, max: 0xffff })),
      handle: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      offset: fc.oneof(fc.nat(), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
      length: fc.oneof(fc.nat(MAX_PAYLOAD * 2), fc.integer({ min: 0, max: 0xffffffff })),
      seed: fc.nat(255),
    })
    .map(({ seed, ...r }) => {
      if (r.command !== Cmd.NBD_CMD_WRITE) return { ...r, data: null };
      const length = r.length % (MAX_PAYLOAD * 2);
      return { ...r, length, data: pattern(length, seed) };
    });

  it('round-trips any sequence of requests through encodeRequest and any chunking', () => {
    fc.assert(
      fc.property(fc.array(arbRequest, { maxLength: 12 }), fc.array(fc.nat(5000), { maxLength: 20 }), (reqs, cuts) => {
        const stream = Buffer.concat(reqs.map(encodeRequest));
        const sorted = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        const frames = feedSplit(new RequestParser({ maxPayload: MAX_PAYLOAD }), stream, sorted);
        expect(frames).toEqual(reqs.map((r) => asFrame(r, r.command === Cmd.NBD_CMD_WRITE && r.length > MAX_PAYLOAD)));
      }),
    );
  });

  it('after a large streamed write the next header is expected alone, so the next payload is read directly in full', () => {
    // connection.ts reads REQUEST_HEADER bytes when expectsHeader(): in a stream of large
    // writes only the first payload's start goes through the staging buffer.
    const big = [1, 2, 3].map(
      (k): NbdRequest => ({
        flags: 0,
        command: Cmd.NBD_CMD_WRITE,
        handle: BigInt(k),
        offset: k << 20,
        length: 128 * 1024,
        data: Buffer.alloc(128 * 1024, k),
      }),
    );
    const flush: NbdRequest = { flags: 0, command: Cmd.NBD_CMD_FLUSH, handle: 9n, offset: 0, length: 0, data: null };
    const stream = Buffer.concat([...big, flush].map(encodeRequest));
    const parser = new RequestParser({ maxPayload: 1 << 20 });
    expect(parser.expectsHeader()).toBe(false);
    const staging = Buffer.alloc(64 * 1024);
    let staged = 0;
    const frames: RequestFrame[] = [];
    for (let at = 0; at < stream.length; ) {
      const direct = parser.directTarget();
      const target = direct ?? (parser.expectsHeader() ? staging.subarray(0, 28) : staging);
      const n = Math.min(target.length, stream.length - at);
      stream.copy(target, 0, at, at + n);
      at += n;
      if (direct === null) {
        staged += n;
        parser.push(staging.subarray(0, n), true);
      } else parser.directFilled(n);
      for (let f = parser.next(); f !== null; f = parser.next()) if (f.type === 'request') frames.push(f);
      parser.own();
      staging.fill(0xee);
    }
    expect(frames).toEqual([...big, flush].map((r) => asFrame(r, false)));
    expect(staged).toBe(64 * 1024 + 28 + 28 + 28); // the first read, then three headers read alone
    expect(parser.expectsHeader()).toBe(false); // the last request was not a large write
  });

  it('round-trips through the socket path: one reused staging buffer, payloads read into directly', () => {
    // What connection.ts does with `onread`: every read lands in one staging buffer that is
    // overwritten by the next read (pushed as transient, then own()), unless the parser offers
    // the rest of a payload as the read target. Frames must come out intact either way.
    fc.assert(
      fc.property(
        fc.array(arbRequest, { maxLength: 12 }),
        fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 20 }),
        (reqs, sizes) => {
          const stream = Buffer.concat(reqs.map(encodeRequest));
          const parser = new RequestParser({ maxPayload: MAX_PAYLOAD });
          const staging = Buffer.alloc(256);
          const frames: RequestFrame[] = [];
          let at = 0;
          for (let i = 0; at < stream.length; i++) {
            const size = sizes[i % sizes.length]!;
            const direct = parser.directTarget();
            const target = direct !== null && i % 2 === 0 ? direct : staging;
            const n = Math.min(size, target.length, stream.length - at);
            stream.copy(target, 0, at, at + n);
            at += n;
            if (target === staging) parser.push(staging.subarray(0, n), true);
            else parser.directFilled(n);
            for (let f = parser.next(); f !== null; f = parser.next()) if (f.type === 'request') frames.push(f);
            parser.own();
            staging.fill(0xee); // the next read overwrites it
          }
          expect(frames).toEqual(
            reqs.map((r) => asFrame(r, r.command === Cmd.NBD_CMD_WRITE && r.length > MAX_PAYLOAD)),
          );
        },
      ),
    );
  });

  it('never throws on arbitrary bytes, however they are split', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.array(fc.nat(400)), (bytes, cuts) => {
        const buf = Buffer.from(bytes);
        const sorted = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
        const frames = feedSplit(new RequestParser({ maxPayload: 16 }), buf, sorted);
        const errors = frames.filter((f) => f.type === 'error');
        expect(errors.length).toBeLessThanOrEqual(1);
        if (errors.length === 1) expect(frames.at(-1)!.type).toBe('error');
      }),
    );
  });
});

describe('option payloads', () => {
  it('round-trips NBD_OPT_INFO/NBD_OPT_GO data', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 100 }).filter((s) => !s.includes('\0')),
        fc.uniqueArray(fc.integer({ min: 0, max: 0xffff }), { maxLength: 10 }),
        (name, infos) => {
          expect(parseInfoRequest(encodeInfoRequest({ name, infos }))).toEqual({ ok: true, value: { name, infos } });
        },
      ),
    );
  });

  it.each([
    ['shorter than 6 bytes', Buffer.from([0, 0, 0, 0, 0])],
    ['a name length past the data', Buffer.from([0, 0, 0, 9, 0x61, 0, 0])],
    ['an odd number of info bytes', Buffer.concat([encodeInfoRequest({ name: 'a', infos: [] }), Buffer.from([0])])],
    [
      'fewer info requests than counted',
      (() => {
        const b = encodeInfoRequest({ name: 'a', infos: [1, 2] });
        b.writeUInt16BE(3, 5);
        return b;
      })(),
    ],
    ['a name that is not UTF-8', Buffer.from([0, 0, 0, 2, 0xc3, 0x28, 0, 0])],
    ['a name with a NUL', Buffer.from([0, 0, 0, 2, 0x61, 0, 0, 0])],
  ])('rejects data with %s as a result, not a throw', (_, data) => {
    expect(parseInfoRequest(data)).toMatchObject({ ok: false });
  });

  it('limits strings to 4096 bytes on both sides', () => {
    expect(decodeNbdString(Buffer.alloc(4097, 0x61))).toMatchObject({ ok: false });
    expect(decodeNbdString(Buffer.alloc(4096, 0x61))).toEqual({ ok: true, value: 'a'.repeat(4096) });
    const encoded = encodeNbdString('é'.repeat(3000)); // 6000 bytes: cut at a character boundary
    expect(encoded.length).toBe(4096);
    expect(decodeNbdString(encoded)).toEqual({ ok: true, value: 'é'.repeat(2048) });
  });
});

describe('server serializers', () => {
  it('writes the greeting as NBDMAGIC IHAVEOPT flags', () => {
    const g = encodeGreeting(HandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE | HandshakeFlag.NBD_FLAG_NO_ZEROES);
    expect(g.toString('latin1', 0, 16)).toBe('NBDMAGICIHAVEOPT');
    expect(g.readUInt16BE(16)).toBe(3);
    expect(g).toHaveLength(18);
  });

  it('round-trips option reply headers', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.constantFrom(...Object.values(Rep)),
        fc.uint8Array({ maxLength: 50 }),
        (option, reply, data) => {
          const buf = encodeOptionReply(option, reply, Buffer.from(data));
          expect(decodeOptionReplyHeader(buf)).toEqual({ option, reply, length: data.length });
          expect(buf.subarray(20)).toEqual(Buffer.from(data));
        },
      ),
    );
  });

  it('round-trips simple reply headers', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(0 as const, ...Object.values(NbdErr)),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        (error, handle) => {
          expect(decodeSimpleReplyHeader(encodeSimpleReply(error, handle))).toEqual({ error, handle });
        },
      ),
    );
    expect(decodeSimpleReplyHeader(Buffer.alloc(16))).toBeNull();
  });

  it('sends the 124 zeroes after NBD_OPT_EXPORT_NAME only without NBD_FLAG_C_NO_ZEROES', () => {
    const withZeroes = encodeExportNameReply(2 ** 40, 0x4d, false);
    expect(withZeroes).toHaveLength(134);
    expect(withZeroes.readBigUInt64BE(0)).toBe(2n ** 40n);
    expect(withZeroes.readUInt16BE(8)).toBe(0x4d);
    expect(withZeroes.subarray(10).every((b) => b === 0)).toBe(true);
    expect(encodeExportNameReply(2 ** 40, 0x4d, true)).toEqual(withZeroes.subarray(0, 10));
  });

  it('lays out NBD_REP_INFO payloads as proto.md specifies', () => {
    const exp = encodeInfoExport(7 * 2 ** 30, 0x6d);
    expect(exp).toHaveLength(12);
    expect([exp.readUInt16BE(0), exp.readBigUInt64BE(2), exp.readUInt16BE(10)]).toEqual([
      Info.NBD_INFO_EXPORT,
      7n * 2n ** 30n,
      0x6d,
    ]);
    const bs = encodeInfoBlockSize(512, 4096, 2 ** 25);
    expect(bs).toHaveLength(14);
    expect([bs.readUInt16BE(0), bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)]).toEqual([
      Info.NBD_INFO_BLOCK_SIZE,
      512,
      4096,
      2 ** 25,
    ]);
    const name = encodeInfoString(Info.NBD_INFO_NAME, 'mysql');
    expect([name.readUInt16BE(0), name.toString('utf8', 2)]).toEqual([Info.NBD_INFO_NAME, 'mysql']);
    const server = encodeRepServer('mysql', 'r0');
    expect([server.readUInt32BE(0), server.toString('utf8', 4, 9), server.toString('utf8', 9)]).toEqual([
      5,
      'mysql',
      'r0',
    ]);
  });
});
