import fc from 'fast-check';
import {
  FrameParser,
  P,
  encodeData,
  decodeData,
  encodeSeq,
  decodeSeq,
  encodeRsData,
  decodeRsData,
  encodeRange,
  decodeRange,
  encodeJson,
  encodeZero,
  decodeZero,
  FRAME_MAGIC,
  DIRECT_PAYLOAD_MIN,
  type Frame,
} from './wire.ts';

const samples: Buffer[][] = [
  encodeJson(P.HELLO, { resource: 'mysql', node: 'master', nonce: 'AAAA', protoMin: 1, protoMax: 1 }),
  encodeData(7, 4096 * 3, Buffer.from('hello world, this is a block'.repeat(10)), 1),
  encodeSeq(P.WRITE_ACK, 7),
  encodeSeq(P.NEG_ACK, 9, -5),
  encodeRsData(1 << 30, Buffer.alloc(4096, 0xab)),
  encodeRange(P.RS_ACK, 8192, 4096),
  encodeZero(3, 65536, 1 << 20, 2),
  encodeJson(P.PING, {}),
];
const stream = Buffer.concat(samples.flat());

function parseWhole(buf: Buffer): Frame[] {
  const r = new FrameParser().feed(buf);
  expect(r.error).toBeUndefined();
  return r.frames;
}

describe('FrameParser', () => {
  const whole = parseWhole(stream);

  test('parses every sample frame from one chunk', () => {
    expect(whole.map((f) => f.type)).toEqual([
      P.HELLO,
      P.DATA,
      P.WRITE_ACK,
      P.NEG_ACK,
      P.RS_DATA,
      P.RS_ACK,
      P.ZERO,
      P.PING,
    ]);
    expect(decodeData(whole[1]!.payload)).toMatchObject({ seq: 7, flags: 1, offset: 12288 });
    expect(decodeSeq(whole[3]!.payload)).toEqual({ seq: 9, errno: -5 });
    expect(decodeRsData(whole[4]!.payload).offset).toBe(1 << 30);
    expect(decodeRange(whole[5]!.payload)).toEqual({ offset: 8192, length: 4096 });
    expect(decodeZero(whole[6]!.payload)).toEqual({ seq: 3, flags: 2, offset: 65536, length: 1 << 20 });
  });

  test('yields the same frames when the stream is split at every byte offset', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const p = new FrameParser();
      const a = p.feed(stream.subarray(0, cut));
      const b = p.feed(stream.subarray(cut));
      expect(a.error ?? b.error).toBeUndefined();
      const frames = [...a.frames, ...b.frames];
      expect(frames.length).toBe(whole.length);
      frames.forEach((f, i) => {
        expect(f.type).toBe(whole[i]!.type);
        expect(f.payload.equals(whole[i]!.payload)).toBe(true);
      });
    }
  });

  test('yields the same frames when fed one byte at a time', () => {
    const p = new FrameParser();
    const frames: Frame[] = [];
    for (let i = 0; i < stream.length; i++) frames.push(...p.feed(stream.subarray(i, i + 1)).frames);
    expect(frames.map((f) => f.payload.toString('hex'))).toEqual(whole.map((f) => f.payload.toString('hex')));
  });

  test('a reused staging buffer and direct payload reads yield the same frames as one whole chunk', () => {
    // What the peer link's onread does: reads land in one buffer that the next read overwrites
    // (feed(chunk, true)), or straight into a large frame's payload (directTarget/directFilled).
    const big = [
      encodeData(11, 1 << 20, Buffer.alloc(200 * 1024, 0x5a), 0),
      encodeRsData(0, Buffer.alloc(70 * 1024, 0xa5)),
    ];
    const all = Buffer.concat([...samples.flat(), ...big.flat(), ...samples.flat()]);
    const expected = parseWhole(all);
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 100_000 }), { minLength: 1, maxLength: 30 }),
        fc.boolean(),
        (sizes, preferDirect) => {
          // Large payloads come from the caller's allocator (the engine's pool gets them back).
          const allocated = new Set<Buffer>();
          const parser = new FrameParser({
            allocPayload: (n) => {
              const b = Buffer.allocUnsafe(n);
              allocated.add(b);
              return b;
            },
          });
          const staging = Buffer.alloc(100_000);
          const frames: Frame[] = [];
          for (let at = 0, i = 0; at < all.length; i++) {
            const direct = parser.directTarget();
            const target = direct !== undefined && (preferDirect || i % 2 === 0) ? direct : staging;
            const n = Math.min(sizes[i % sizes.length]!, target.length, all.length - at);
            all.copy(target, 0, at, at + n);
            at += n;
            const r = target === staging ? parser.feed(staging.subarray(0, n), true) : parser.directFilled(n);
            expect(r.error).toBeUndefined();
            frames.push(...r.frames);
            staging.fill(0xee);
          }
          expect(frames).toEqual(expected);
          const large = frames.filter((f) => f.payload.length >= DIRECT_PAYLOAD_MIN);
          expect(large.length).toBe(2);
          for (const f of large) expect(allocated.has(f.payload)).toBe(true);
        },
      ),
      { numRuns: 50 },
    );
  });

  test('after a large frame the next header is expected alone, so the next payload is read directly in full', () => {
    // The peer link's onread reads HEADER_BYTES when expectsHeader(): in a stream of large DATA
    // frames only the first payload's start goes through the staging buffer.
    const payloads = [1, 2, 3].map((k) => Buffer.alloc(300 * 1024, k));
    const all = Buffer.concat([
      ...payloads.flatMap((d, i) => encodeData(i, i << 20, d, 0)),
      ...encodeSeq(P.WRITE_ACK, 9),
    ]);
    const parser = new FrameParser();
    expect(parser.expectsHeader()).toBe(false);
    const staging = Buffer.alloc(256 * 1024);
    let staged = 0;
    const frames: Frame[] = [];
    for (let at = 0; at < all.length; ) {
      const direct = parser.directTarget();
      const target = direct ?? (parser.expectsHeader() ? staging.subarray(0, 12) : staging);
      const n = Math.min(target.length, all.length - at);
      all.copy(target, 0, at, at + n);
      at += n;
      if (direct === undefined) staged += n;
      const r = direct === undefined ? parser.feed(staging.subarray(0, n), true) : parser.directFilled(n);
      expect(r.error).toBeUndefined();
      frames.push(...r.frames);
    }
    expect(frames.map((f) => f.type)).toEqual([P.DATA, P.DATA, P.DATA, P.WRITE_ACK]);
    for (const [i, f] of frames.slice(0, 3).entries())
      expect(decodeData(f.payload).data.equals(payloads[i]!)).toBe(true);
    expect(staged).toBe(256 * 1024 + 3 * 12 + 4); // the first read, three headers read alone, the ack's 4-byte payload
    expect(parser.expectsHeader()).toBe(false); // the last frame was small
  });

  test('reports bad magic and stays poisoned', () => {
    const bad = Buffer.from(stream);
    bad.writeUInt32LE(0xdeadbeef, 0);
    const p = new FrameParser();
    expect(p.feed(bad).error).toMatch(/bad frame magic/);
    expect(p.feed(stream).error).toMatch(/bad frame magic/);
  });

  test('rejects unknown types, oversized and undersized payloads without waiting for them', () => {
    const h = Buffer.alloc(12);
    h.writeUInt32LE(FRAME_MAGIC, 0);
    h.writeUInt16LE(0x7f, 4);
    expect(new FrameParser().feed(h).error).toMatch(/unknown packet type/);
    h.writeUInt16LE(P.DATA, 4);
    h.writeUInt32LE(0xffffffff, 8);
    expect(new FrameParser().feed(h).error).toMatch(/exceeds/);
    h.writeUInt16LE(P.PARAMS, 4);
    h.writeUInt32LE(4 * 1024 * 1024, 8);
    expect(new FrameParser().feed(h).error).toMatch(/control payload/);
    h.writeUInt16LE(P.DATA, 4);
    h.writeUInt32LE(3, 8);
    expect(new FrameParser().feed(h).error).toMatch(/too short/);
  });

  test('DATA round-trips for any seq, offset, flags and payload', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 2 ** 50 }),
        fc.nat({ max: 3 }),
        fc.uint8Array({ maxLength: 9000 }),
        (seq, offset, flags, data) => {
          const frames = parseWhole(Buffer.concat(encodeData(seq, offset, Buffer.from(data), flags)));
          expect(frames).toHaveLength(1);
          const d = decodeData(frames[0]!.payload);
          expect(d).toMatchObject({ seq, offset, flags });
          expect(Buffer.compare(d.data, Buffer.from(data))).toBe(0);
        },
      ),
    );
  });
});
