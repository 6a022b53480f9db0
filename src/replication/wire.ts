// The peer link's wire format. Pure: encoders return buffers, the push parser
// takes whatever the socket delivered and returns whole frames; neither touches
// a socket, and the parser never throws on partial input.
//
// Every frame: magic u32 | type u16 | flags u16 | payload length u32 | payload.
// All integers little-endian. Control frames carry JSON (validated with zod by
// the receiver); the replication hot path (DATA, acks, RS_DATA) is binary.

export const FRAME_MAGIC = 0x4d444e54; // "TNDM" read as little-endian
export const HEADER_BYTES = 12;
/**
 * 2: mirrored writes travel in epochs closed by BARRIER and made durable on the peer
 * before its BARRIER_ACK (FLUSH/FLUSH_ACK are gone). A version-1 peer is refused at the
 * handshake: its acknowledgements promise less than this version relies on.
 * 3: the handshake proves the peer before anything names the resource (handshake.ts), and
 * TRIM/WRITE_ZEROES are mirrored as ZERO frames. A version-2 peer cannot take part.
 */
export const PROTOCOL_VERSION_MIN = 3;
export const PROTOCOL_VERSION_MAX = 3;
/** Largest payload accepted: a 32 MiB write plus its sub-header. */
export const MAX_PAYLOAD = 32 * 1024 * 1024 + 64;
/** Control frames (JSON) are small; a peer sending more is broken or hostile. */
export const MAX_CONTROL_PAYLOAD = 1024 * 1024;

export const P = {
  HELLO: 0x01,
  AUTH: 0x02,
  ERROR: 0x03,
  PARAMS: 0x04,
  STATE: 0x05,
  PING: 0x06,
  PING_ACK: 0x07,
  BITMAP: 0x08,
  SYNC_START: 0x09,
  SYNC_DONE: 0x0a,
  SYNC_DONE_ACK: 0x0b,
  DATA: 0x10,
  RECV_ACK: 0x11,
  WRITE_ACK: 0x12,
  NEG_ACK: 0x13,
  ZERO: 0x16,
  RS_DATA: 0x18,
  RS_ACK: 0x19,
  RS_NEG_ACK: 0x1a,
  RS_ZERO: 0x1b,
  VERIFY_REQ: 0x1c,
  VERIFY_REPLY: 0x1d,
  READ_REQ: 0x1e,
  READ_REPLY: 0x1f,
  RS_CSUM: 0x20,
  RS_CSUM_REPLY: 0x21,
  BARRIER: 0x22,
  BARRIER_ACK: 0x23,
  /** Handshake (handshake.ts): a 32-byte nonce and the cram-hmac-alg name. */
  CHALLENGE: 0x24,
} as const;
export type PacketType = (typeof P)[keyof typeof P];

const KNOWN_TYPES = new Set<number>(Object.values(P));
const BINARY_TYPES = new Set<number>([
  P.AUTH,
  P.CHALLENGE,
  P.BITMAP,
  P.DATA,
  P.RECV_ACK,
  P.WRITE_ACK,
  P.NEG_ACK,
  P.BARRIER,
  P.BARRIER_ACK,
  P.ZERO,
  P.RS_DATA,
  P.RS_ACK,
  P.RS_NEG_ACK,
  P.PING,
  P.PING_ACK,
  P.VERIFY_REQ,
  P.VERIFY_REPLY,
  P.READ_REQ,
  P.READ_REPLY,
  P.RS_ZERO,
  P.RS_CSUM,
  P.RS_CSUM_REPLY,
]);

export const DATA_FLAGS = { FUA: 1, TRIM: 2 } as const;
export const FRAME_FLAGS = { LAST: 1 } as const;

export interface Frame {
  type: PacketType;
  flags: number;
  payload: Buffer;
}

export type ParseResult = { frames: Frame[]; error?: string };

const EMPTY = Buffer.alloc(0);

function header(type: PacketType, flags: number, length: number, extra = 0): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES + extra);
  h.writeUInt32LE(FRAME_MAGIC, 0);
  h.writeUInt16LE(type, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(length, 8);
  return h;
}

export function encodeFrame(type: PacketType, payload: Buffer = Buffer.alloc(0), flags = 0): Buffer[] {
  return payload.length === 0 ? [header(type, flags, 0)] : [header(type, flags, payload.length), payload];
}

export function encodeJson(type: PacketType, value: unknown, flags = 0): Buffer[] {
  return encodeFrame(type, Buffer.from(JSON.stringify(value), 'utf8'), flags);
}

/** DATA: seq u32 | flags u32 | offset u64 | data. Returns [header+subheader, data]. */
export function encodeData(seq: number, offset: number, data: Buffer, flags: number): Buffer[] {
  const h = header(P.DATA, 0, 16 + data.length, 16);
  h.writeUInt32LE(seq, 12);
  h.writeUInt32LE(flags, 16);
  h.writeBigUInt64LE(BigInt(offset), 20);
  return [h, data];
}

export function decodeData(p: Buffer): { seq: number; flags: number; offset: number; data: Buffer } {
  return {
    seq: p.readUInt32LE(0),
    flags: p.readUInt32LE(4),
    offset: Number(p.readBigUInt64LE(8)),
    data: p.subarray(16),
  };
}

/** ZERO: seq u32 | flags u32 | offset u64 | length u32 (WRITE_ZEROES and TRIM carry no data). */
export function encodeZero(seq: number, offset: number, length: number, flags: number): Buffer[] {
  const h = header(P.ZERO, 0, 20, 20);
  h.writeUInt32LE(seq, 12);
  h.writeUInt32LE(flags, 16);
  h.writeBigUInt64LE(BigInt(offset), 20);
  h.writeUInt32LE(length, 28);
  return [h];
}

export function decodeZero(p: Buffer): { seq: number; flags: number; offset: number; length: number } {
  return {
    seq: p.readUInt32LE(0),
    flags: p.readUInt32LE(4),
    offset: Number(p.readBigUInt64LE(8)),
    length: p.readUInt32LE(16),
  };
}

/** RECV_ACK, WRITE_ACK, BARRIER: seq (or epoch) u32; NEG_ACK adds errno i32. */
export function encodeSeq(type: PacketType, seq: number, errno?: number): Buffer[] {
  const h = header(type, 0, errno === undefined ? 4 : 8, errno === undefined ? 4 : 8);
  h.writeUInt32LE(seq, 12);
  if (errno !== undefined) h.writeInt32LE(errno, 16);
  return [h];
}

export function decodeSeq(p: Buffer): { seq: number; errno: number } {
  return { seq: p.readUInt32LE(0), errno: p.length >= 8 ? p.readInt32LE(4) : 0 };
}

/**
 * BARRIER_ACK: epoch u32 | writes u32 | errno i32. The peer has every write of the epoch
 * on stable storage (errno 0), or could not make them durable (errno < 0).
 */
export function encodeBarrierAck(epoch: number, writes: number, errno: number): Buffer[] {
  const h = header(P.BARRIER_ACK, 0, 12, 12);
  h.writeUInt32LE(epoch, 12);
  h.writeUInt32LE(writes, 16);
  h.writeInt32LE(errno, 20);
  return [h];
}

export function decodeBarrierAck(p: Buffer): { epoch: number; writes: number; errno: number } {
  return { epoch: p.readUInt32LE(0), writes: p.readUInt32LE(4), errno: p.readInt32LE(8) };
}

/** RS_DATA: offset u64 | data. */
export function encodeRsData(offset: number, data: Buffer): Buffer[] {
  const h = header(P.RS_DATA, 0, 8 + data.length, 8);
  h.writeBigUInt64LE(BigInt(offset), 12);
  return [h, data];
}

export function decodeRsData(p: Buffer): { offset: number; data: Buffer } {
  return { offset: Number(p.readBigUInt64LE(0)), data: p.subarray(8) };
}

/** RS_ACK / RS_NEG_ACK: offset u64 | length u32. */
export function encodeRange(type: PacketType, offset: number, length: number): Buffer[] {
  const h = header(type, 0, 12, 12);
  h.writeBigUInt64LE(BigInt(offset), 12);
  h.writeUInt32LE(length, 20);
  return [h];
}

export function decodeRange(p: Buffer): { offset: number; length: number } {
  return { offset: Number(p.readBigUInt64LE(0)), length: p.readUInt32LE(8) };
}

/** The minimum payload each binary frame type needs; shorter is a protocol error. */
export const MIN_PAYLOAD: Partial<Record<PacketType, number>> = {
  [P.DATA]: 16,
  [P.CHALLENGE]: 32,
  [P.RECV_ACK]: 4,
  [P.WRITE_ACK]: 4,
  [P.NEG_ACK]: 8,
  [P.BARRIER]: 4,
  [P.BARRIER_ACK]: 12,
  [P.ZERO]: 20,
  [P.RS_DATA]: 8,
  [P.RS_ACK]: 12,
  [P.RS_NEG_ACK]: 12,
  [P.VERIFY_REQ]: 12,
  [P.VERIFY_REPLY]: 12,
  [P.READ_REQ]: 16,
  [P.READ_REPLY]: 8,
  [P.RS_ZERO]: 12,
  [P.RS_CSUM]: 12,
  [P.RS_CSUM_REPLY]: 12,
};

/** VERIFY_REQ / VERIFY_REPLY: offset u64 | length u32 | body (digests, or a bitset of mismatching blocks). */
export function encodeVerify(type: PacketType, offset: number, length: number, body: Buffer): Buffer[] {
  const h = header(type, 0, 12 + body.length, 12);
  h.writeBigUInt64LE(BigInt(offset), 12);
  h.writeUInt32LE(length, 20);
  return [h, body];
}

export function decodeVerify(p: Buffer): { offset: number; length: number; body: Buffer } {
  return { offset: Number(p.readBigUInt64LE(0)), length: p.readUInt32LE(8), body: p.subarray(12) };
}

/** A frame with at least this much payload is received into its final buffer as it arrives. */
export const DIRECT_PAYLOAD_MIN = 64 * 1024;

export interface FrameParserOptions {
  /** Buffers for payloads of DIRECT_PAYLOAD_MIN bytes and more (a pool); default Buffer.allocUnsafe. */
  readonly allocPayload?: (length: number) => Buffer;
}

/**
 * Push parser. Keeps a list of received chunks (no concatenation while waiting
 * for a header); a frame that lies in one chunk is returned as a zero-copy slice.
 * A large frame (DATA, RS_DATA of 64 KiB and more) gets its final buffer as soon
 * as its header is in, and its payload is copied there as it arrives, or read
 * there directly by the socket ({@link directTarget}).
 * `feed(chunk, true)`: the caller reuses the chunk's memory once feed returns, so
 * no frame and nothing kept is a view of it.
 * After an error the parser is poisoned: the stream cannot be trusted any more.
 */
export class FrameParser {
  private readonly alloc: (length: number) => Buffer;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed: string | undefined;
  /** The large frame whose payload is being received. */
  private partial: { type: PacketType; flags: number; payload: Buffer; filled: number } | undefined;
  /** The memory of the chunk being fed, when the caller reuses it. */
  private transient: ArrayBufferLike | undefined;
  /** The last frame was a large one whose payload streamed in after its header. */
  private afterStreamed = false;

  constructor(opts: FrameParserOptions = {}) {
    this.alloc = opts.allocPayload ?? Buffer.allocUnsafe;
  }

  feed(chunk: Buffer, transient = false): ParseResult {
    if (this.failed) return { frames: [], error: this.failed };
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    this.transient = transient ? chunk.buffer : undefined;
    try {
      return this.frames();
    } finally {
      if (this.transient !== undefined) this.own();
      this.transient = undefined;
    }
  }

  /**
   * Where the socket may read next without a copy: the unfilled rest of a large frame's
   * payload, when nothing else is queued before it. Report what was read with directFilled().
   */
  directTarget(): Buffer | undefined {
    const p = this.partial;
    return p !== undefined && this.buffered === 0 ? p.payload.subarray(p.filled) : undefined;
  }

  /**
   * Nothing is queued and the last frame was a large one received as a stream: in a stream of
   * large writes the next bytes are another header and then its payload. A socket that reads
   * the header alone (HEADER_BYTES) lets that payload go straight to directTarget() instead of
   * into a staging buffer behind the header, to be copied from there.
   */
  expectsHeader(): boolean {
    return this.afterStreamed && this.partial === undefined && this.buffered === 0;
  }

  /** `n` bytes were read into directTarget(); returns the frames that completes. */
  directFilled(n: number): ParseResult {
    const p = this.partial;
    if (p === undefined || this.buffered > 0 || n > p.payload.length - p.filled)
      throw new RangeError(`directFilled(${n}) outside a payload`);
    p.filled += n;
    return this.feed(EMPTY);
  }

  private frames(): ParseResult {
    const frames: Frame[] = [];
    for (;;) {
      const p = this.partial;
      if (p !== undefined) {
        const step = Math.min(this.buffered, p.payload.length - p.filled);
        if (step > 0) {
          this.copyOut(p.payload, p.filled, step);
          p.filled += step;
        }
        if (p.filled < p.payload.length) break;
        this.partial = undefined;
        this.afterStreamed = true;
        frames.push({ type: p.type, flags: p.flags, payload: p.payload });
        continue;
      }
      if (this.buffered < HEADER_BYTES) break;
      const h = this.peek(HEADER_BYTES);
      const magic = h.readUInt32LE(0);
      const type = h.readUInt16LE(4);
      const flags = h.readUInt16LE(6);
      const length = h.readUInt32LE(8);
      const problem =
        magic !== FRAME_MAGIC
          ? `bad frame magic 0x${magic.toString(16)}`
          : !KNOWN_TYPES.has(type)
            ? `unknown packet type 0x${type.toString(16)}`
            : length > MAX_PAYLOAD
              ? `payload of ${length} bytes exceeds ${MAX_PAYLOAD}`
              : !BINARY_TYPES.has(type) && length > MAX_CONTROL_PAYLOAD
                ? `control payload of ${length} bytes exceeds ${MAX_CONTROL_PAYLOAD}`
                : length < (MIN_PAYLOAD[type as PacketType] ?? 0)
                  ? `payload of ${length} bytes is too short for packet type 0x${type.toString(16)}`
                  : undefined;
      if (problem) {
        this.failed = problem;
        this.chunks = [];
        this.buffered = 0;
        this.partial = undefined;
        return { frames, error: problem };
      }
      if (this.buffered < HEADER_BYTES + length) {
        if (length < DIRECT_PAYLOAD_MIN) break;
        this.consume(HEADER_BYTES);
        this.partial = { type: type as PacketType, flags, payload: this.alloc(length), filled: 0 };
        continue;
      }
      this.consume(HEADER_BYTES);
      this.afterStreamed = false;
      frames.push({ type: type as PacketType, flags, payload: this.take(length, true) });
    }
    return { frames };
  }

  /** Replaces queued views of the transient chunk with copies. */
  private own(): void {
    const t = this.transient;
    for (let i = 0; i < this.chunks.length; i++)
      if (this.chunks[i]!.buffer === t) this.chunks[i] = Buffer.from(this.chunks[i]!);
  }

  /** Moves the next n queued bytes into dest at `at`. */
  private copyOut(dest: Buffer, at: number, n: number): void {
    let off = at;
    let left = n;
    while (left > 0) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, left);
      c.copy(dest, off, 0, k);
      off += k;
      left -= k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
  }

  /** Returns the first n bytes without consuming them (copies only across chunk boundaries). */
  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    for (const c of this.chunks) {
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (off === n) break;
    }
    return out;
  }

  private consume(n: number): void {
    this.take(n);
  }

  /** The next n queued bytes: a view when they lie in one chunk we may keep, else a copy (a frame's payload from alloc() when large). */
  private take(n: number, payload = false): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length >= n && first.buffer !== this.transient) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return out;
    }
    const out = payload && n >= DIRECT_PAYLOAD_MIN ? this.alloc(n) : Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}

/** READ_REQ: id u32 | length u32 | offset u64 — a Diskless Primary reads through its peer. */
export function encodeReadRequest(id: number, offset: number, length: number): Buffer[] {
  const h = header(P.READ_REQ, 0, 16, 16);
  h.writeUInt32LE(id, 12);
  h.writeUInt32LE(length, 16);
  h.writeBigUInt64LE(BigInt(offset), 20);
  return [h];
}

export function decodeReadRequest(p: Buffer): { id: number; length: number; offset: number } {
  return { id: p.readUInt32LE(0), length: p.readUInt32LE(4), offset: Number(p.readBigUInt64LE(8)) };
}

/** READ_REPLY: id u32 | errno i32 | data. */
export function encodeReadReply(id: number, errno: number, data: Buffer = Buffer.alloc(0)): Buffer[] {
  const h = header(P.READ_REPLY, 0, 8 + data.length, 8);
  h.writeUInt32LE(id, 12);
  h.writeInt32LE(errno, 16);
  return data.length > 0 ? [h, data] : [h];
}

export function decodeReadReply(p: Buffer): { id: number; errno: number; data: Buffer } {
  return { id: p.readUInt32LE(0), errno: p.readInt32LE(4), data: p.subarray(8) };
}
