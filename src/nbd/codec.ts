// Pure NBD wire codec: push parsers for what a client sends (the option haggling
// of the fixed newstyle handshake, then transmission requests) and serializers
// for what the server sends. Nothing here touches a socket, and no parser throws
// on partial or malformed input: partial input yields no frame yet, malformed
// input yields one terminal `{ type: 'error' }` frame after which the parser is
// inert (the stream is out of sync; the caller drops the connection).
//
// Every parser has two faces:
//   feed(chunk) → frames    push a chunk and take every complete frame (tests, simple callers)
//   push(chunk); next()     pull one frame at a time, so that the server can stop between
//                           frames (switch from handshake to transmission, or hold back
//                           requests while the backend is saturated)
//
// Client-side encoders are here too (encodeRequest, encodeOption ...): the tests use them
// for round trips, and they describe the wire as precisely as the decoders do.

import { ByteQueue } from './byte-queue.ts';
import {
  Cmd,
  IHAVEOPT,
  NBD_MAX_STRING_LENGTH,
  NBD_REP_MAGIC,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBDMAGIC,
  Info,
  WireSize,
  type NbdErrno,
} from './constants.ts';
import { NbdErrorCode } from './errors.ts';

const TWO_32 = 2 ** 32;
const IHAVEOPT_HI = Number(IHAVEOPT >> 32n);
const IHAVEOPT_LO = Number(IHAVEOPT & 0xffffffffn);

/** A terminal parse failure: the byte stream can no longer be framed. */
export interface CodecError {
  readonly type: 'error';
  readonly code: typeof NbdErrorCode.BAD_MAGIC;
  readonly message: string;
}

function readU64(buf: Buffer, at: number): number {
  // Exact up to 2^53; beyond that the (rounded) value is still larger than any export size,
  // which is all a bounds check needs.
  return buf.readUInt32BE(at) * TWO_32 + buf.readUInt32BE(at + 4);
}

function writeU64(buf: Buffer, value: number, at: number): void {
  if (!Number.isSafeInteger(value) || value < 0)
    throw new RangeError(`not a u64 the codec can encode exactly: ${value}`);
  buf.writeUInt32BE(Math.floor(value / TWO_32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

// ---------------------------------------------------------------------------
// Handshake (option haggling), client → server
// ---------------------------------------------------------------------------

export type HandshakeFrame =
  /** proto.md "Newstyle negotiation": C: 32 bits, client flags. */
  | { readonly type: 'client-flags'; readonly flags: number }
  /** proto.md "Newstyle negotiation": an option with its data (at most maxOptionLength bytes). */
  | { readonly type: 'option'; readonly option: number; readonly data: Buffer }
  /** An option whose data exceeded maxOptionLength; the data was consumed and discarded. */
  | { readonly type: 'option-oversized'; readonly option: number; readonly length: number }
  | CodecError;

export interface HandshakeParserOptions {
  /** Option data longer than this is skipped without being buffered. Default 64 KiB. */
  readonly maxOptionLength?: number;
}

export const DEFAULT_MAX_OPTION_LENGTH = 64 * 1024;

type HandshakeState = 'client-flags' | 'option-header' | 'option-data' | 'option-discard' | 'broken';

export class HandshakeParser {
  readonly #queue = new ByteQueue();
  readonly #maxOptionLength: number;
  readonly #scratch = Buffer.alloc(WireSize.OPTION_HEADER);
  #state: HandshakeState = 'client-flags';
  #option = 0;
  #length = 0;
  #remaining = 0;

  constructor(options: HandshakeParserOptions = {}) {
    this.#maxOptionLength = options.maxOptionLength ?? DEFAULT_MAX_OPTION_LENGTH;
  }

  push(chunk: Buffer): void {
    if (this.#state !== 'broken') this.#queue.push(chunk);
  }

  feed(chunk: Buffer): HandshakeFrame[] {
    this.push(chunk);
    const frames: HandshakeFrame[] = [];
    for (let f = this.next(); f !== null; f = this.next()) frames.push(f);
    return frames;
  }

  /** Bytes received after the last frame taken; the caller hands them to the transmission parser. */
  takeRemaining(): Buffer[] {
    return this.#queue.drain();
  }

  next(): HandshakeFrame | null {
    const q = this.#queue;
    for (;;) {
      switch (this.#state) {
        case 'broken':
          return null;
        case 'client-flags': {
          if (q.length < WireSize.CLIENT_FLAGS) return null;
          const flags = this.#header(WireSize.CLIENT_FLAGS).readUInt32BE(0);
          this.#state = 'option-header';
          return { type: 'client-flags', flags };
        }
        case 'option-header': {
          if (q.length < WireSize.OPTION_HEADER) return null;
          const h = this.#header(WireSize.OPTION_HEADER);
          // proto.md "Newstyle negotiation": C: 64 bits, 0x49484156454F5054 (ASCII 'IHAVEOPT')
          if (h.readUInt32BE(0) !== IHAVEOPT_HI || h.readUInt32BE(4) !== IHAVEOPT_LO) {
            this.#state = 'broken';
            q.drain();
            return {
              type: 'error',
              code: NbdErrorCode.BAD_MAGIC,
              message: `Option without the IHAVEOPT magic (0x${h.toString('hex', 0, 8)})`,
            };
          }
          this.#option = h.readUInt32BE(8);
          this.#length = h.readUInt32BE(12);
          this.#remaining = this.#length;
          this.#state = this.#length > this.#maxOptionLength ? 'option-discard' : 'option-data';
          continue;
        }
        case 'option-data': {
          if (q.length < this.#length) return null;
          const data = Buffer.from(q.take(this.#length)); // own copy: small, and outlives the chunk
          this.#state = 'option-header';
          return { type: 'option', option: this.#option, data };
        }
        case 'option-discard': {
          // proto.md "Newstyle negotiation": "The presence of the option length in every option
          // allows the server to skip any options presented by the client that it does not understand."
          const step = Math.min(q.length, this.#remaining);
          q.skip(step);
          this.#remaining -= step;
          if (this.#remaining > 0) return null;
          this.#state = 'option-header';
          return { type: 'option-oversized', option: this.#option, length: this.#length };
        }
      }
    }
  }

  #header(size: number): Buffer {
    return readFixed(this.#queue, size, this.#scratch);
  }
}

/** Consumes `size` bytes: a view of the front chunk when contiguous, else a copy into `scratch`. */
function readFixed(q: ByteQueue, size: number, scratch: Buffer): Buffer {
  if (q.contiguous() >= size) {
    const { chunk, offset } = q.front()!;
    const view = chunk.subarray(offset, offset + size);
    q.skip(size);
    return view;
  }
  q.copyTo(scratch, 0, size);
  return scratch;
}

// ---------------------------------------------------------------------------
// Transmission requests, client → server
// ---------------------------------------------------------------------------

/** proto.md "Request message". */
export interface NbdRequest {
  /** Command flags (NBD_CMD_FLAG_*). */
  readonly flags: number;
  /** Request type (NBD_CMD_*). */
  readonly command: number;
  /** Opaque 64-bit handle, echoed in the reply. */
  readonly handle: bigint;
  /** Offset in bytes. Exact up to 2^53; larger wire values decode to a number above 2^53. */
  readonly offset: number;
  readonly length: number;
  /**
   * The payload of an NBD_CMD_WRITE (length bytes), null for every other command and for a
   * write whose payload exceeded maxPayload (see `discarded`).
   */
  readonly data: Buffer | null;
}

export interface RequestFrame extends NbdRequest {
  readonly type: 'request';
  /** True for an NBD_CMD_WRITE whose payload exceeded maxPayload and was consumed without buffering. */
  readonly discarded: boolean;
}

export interface RequestParserOptions {
  /** A write payload above this many bytes is consumed and dropped, never buffered. */
  readonly maxPayload: number;
  /** Allocates a payload buffer that will be filled as the bytes arrive. Default Buffer.allocUnsafe. */
  readonly allocPayload?: (length: number) => Buffer;
}

type RequestState = 'header' | 'payload' | 'discard' | 'broken';

/** After a streamed write payload of at least this size, the next header is read on its own. */
const HEADER_ALONE_AFTER = 64 * 1024;

/**
 * The hot-path parser. A request header is decoded in place when it lies in one received
 * chunk; a write payload is handed on as a view of the received chunk when it lies in one,
 * else copied once into a buffer of its final size as the chunks arrive.
 */
export class RequestParser {
  readonly #queue = new ByteQueue();
  readonly #maxPayload: number;
  readonly #allocPayload: (length: number) => Buffer;
  readonly #scratch = Buffer.alloc(WireSize.REQUEST_HEADER);
  #state: RequestState = 'header';
  // The request whose payload is being received or discarded.
  #flags = 0;
  #command = 0;
  #handle = 0n;
  #offset = 0;
  #length = 0;
  #payload: Buffer | null = null;
  #filled = 0;
  /** The last request was a large write whose payload streamed in after its header. */
  #afterStreamed = false;

  constructor(options: RequestParserOptions) {
    this.#maxPayload = options.maxPayload;
    this.#allocPayload = options.allocPayload ?? Buffer.allocUnsafe;
  }

  /** Bytes received and not yet framed (bounded: the socket is paused while they wait). */
  get buffered(): number {
    return this.#queue.length;
  }

  /**
   * Queues received bytes. `transient`: the caller reuses the chunk's memory after it has
   * taken the frames it wants and called {@link own}; no frame holds a view of it.
   */
  push(chunk: Buffer, transient = false): void {
    if (this.#state === 'broken') return;
    this.#queue.push(chunk, transient);
  }

  /** Copies queued bytes out of transient chunks (call before reusing their memory). */
  own(): void {
    this.#queue.own();
  }

  /**
   * Where the next bytes from the socket may be read to directly: the unfilled rest of the
   * write payload being received, when nothing else is queued before it; else null. The
   * caller reads into it and reports with {@link directFilled}: the payload then needs no copy.
   */
  directTarget(): Buffer | null {
    if (this.#state !== 'payload' || this.#queue.length > 0) return null;
    return this.#payload!.subarray(this.#filled);
  }

  /**
   * Nothing is queued and the last request was a write whose payload arrived after its header:
   * in a stream of large writes, the next bytes are another header and then its payload. Reading
   * the header alone lets the payload go straight to {@link directTarget} instead of being read
   * into a staging buffer behind the header and copied from there.
   */
  expectsHeader(): boolean {
    return this.#afterStreamed && this.#state === 'header' && this.#queue.length === 0;
  }

  /** `n` bytes were received into {@link directTarget}'s buffer. */
  directFilled(n: number): void {
    if (this.#state !== 'payload' || this.#queue.length > 0 || n > this.#length - this.#filled)
      throw new RangeError(`directFilled(${n}) outside a payload`);
    this.#filled += n;
  }

  feed(chunk: Buffer): (RequestFrame | CodecError)[] {
    this.push(chunk);
    const frames: (RequestFrame | CodecError)[] = [];
    for (let f = this.next(); f !== null; f = this.next()) frames.push(f);
    return frames;
  }

  next(): RequestFrame | CodecError | null {
    const q = this.#queue;
    switch (this.#state) {
      case 'broken':
        return null;
      case 'header': {
        if (q.length < WireSize.REQUEST_HEADER) return null;
        const h = readFixed(q, WireSize.REQUEST_HEADER, this.#scratch);
        const magic = h.readUInt32BE(0);
        if (magic !== NBD_REQUEST_MAGIC) {
          this.#state = 'broken';
          q.drain();
          return {
            type: 'error',
            code: NbdErrorCode.BAD_MAGIC,
            message: `Request with magic 0x${magic.toString(16).padStart(8, '0')}`,
          };
        }
        const flags = h.readUInt16BE(4);
        const command = h.readUInt16BE(6);
        const handle = h.readBigUInt64BE(8);
        const offset = readU64(h, 16);
        const length = h.readUInt32BE(24);
        // proto.md "Request message": C: (*length* bytes of data if the request is of type NBD_CMD_WRITE)
        this.#afterStreamed = false;
        if (command !== Cmd.NBD_CMD_WRITE) return frame(flags, command, handle, offset, length, null, false);
        if (length === 0) return frame(flags, command, handle, offset, length, Buffer.alloc(0), false);
        this.#flags = flags;
        this.#command = command;
        this.#handle = handle;
        this.#offset = offset;
        this.#length = length;
        this.#filled = 0;
        if (length > this.#maxPayload) {
          this.#state = 'discard';
          return this.#discard();
        }
        if (q.length >= length) return frame(flags, command, handle, offset, length, q.take(length), false);
        this.#payload = this.#allocPayload(length);
        this.#state = 'payload';
        return this.#fill();
      }
      case 'payload':
        return this.#fill();
      case 'discard':
        return this.#discard();
    }
  }

  #fill(): RequestFrame | null {
    const q = this.#queue;
    const payload = this.#payload!;
    const step = Math.min(q.length, this.#length - this.#filled);
    q.copyTo(payload, this.#filled, step);
    this.#filled += step;
    if (this.#filled < this.#length) return null;
    this.#payload = null;
    this.#state = 'header';
    this.#afterStreamed = this.#length >= HEADER_ALONE_AFTER;
    return frame(this.#flags, this.#command, this.#handle, this.#offset, this.#length, payload, false);
  }

  #discard(): RequestFrame | null {
    const q = this.#queue;
    const step = Math.min(q.length, this.#length - this.#filled);
    q.skip(step);
    this.#filled += step;
    if (this.#filled < this.#length) return null;
    this.#state = 'header';
    return frame(this.#flags, this.#command, this.#handle, this.#offset, this.#length, null, true);
  }
}

function frame(
  flags: number,
  command: number,
  handle: bigint,
  offset: number,
  length: number,
  data: Buffer | null,
  discarded: boolean,
): RequestFrame {
  return { type: 'request', flags, command, handle, offset, length, data, discarded };
}

/** Client side: proto.md "Request message", followed by the payload of a write. */
export function encodeRequest(req: NbdRequest): Buffer {
  const payload = req.command === Cmd.NBD_CMD_WRITE ? req.data : null;
  if (payload !== null && payload.length !== req.length)
    throw new RangeError(`write payload is ${payload.length} bytes, length says ${req.length}`);
  const buf = Buffer.alloc(WireSize.REQUEST_HEADER + (payload?.length ?? 0));
  buf.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  buf.writeUInt16BE(req.flags, 4);
  buf.writeUInt16BE(req.command, 6);
  buf.writeBigUInt64BE(req.handle, 8);
  writeU64(buf, req.offset, 16);
  buf.writeUInt32BE(req.length, 24);
  payload?.copy(buf, WireSize.REQUEST_HEADER);
  return buf;
}

// ---------------------------------------------------------------------------
// Option payloads
// ---------------------------------------------------------------------------

export interface InfoRequest {
  readonly name: string;
  /** NBD_INFO_* types the client asked for. */
  readonly infos: readonly number[];
}

export type ParseResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** proto.md "Conventions": a string is UTF-8, MUST NOT contain NUL, MUST be no longer than 4096 bytes. */
export function decodeNbdString(bytes: Buffer): ParseResult<string> {
  if (bytes.length > NBD_MAX_STRING_LENGTH)
    return { ok: false, reason: `string of ${bytes.length} bytes exceeds ${NBD_MAX_STRING_LENGTH}` };
  if (bytes.includes(0)) return { ok: false, reason: 'string contains NUL' };
  try {
    return { ok: true, value: utf8.decode(bytes) };
  } catch {
    return { ok: false, reason: 'string is not valid UTF-8' };
  }
}

/** Encodes a string for the wire, truncated at a character boundary to the 4096-byte limit. */
export function encodeNbdString(s: string): Buffer {
  let buf = Buffer.from(s.replaceAll('\0', ''), 'utf8');
  if (buf.length <= NBD_MAX_STRING_LENGTH) return buf;
  let end = NBD_MAX_STRING_LENGTH;
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--; // back off a continuation byte
  buf = buf.subarray(0, end);
  return buf;
}

/**
 * proto.md "NBD_OPT_INFO (6) and NBD_OPT_GO (7)", data: 32 bits length of name (MUST be no larger
 * than the option data length - 6), the name, 16 bits number of information requests, 16 bits × n.
 */
export function parseInfoRequest(data: Buffer): ParseResult<InfoRequest> {
  if (data.length < 6) return { ok: false, reason: `option data of ${data.length} bytes is shorter than 6` };
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) return { ok: false, reason: `name length ${nameLength} exceeds the option data` };
  const name = decodeNbdString(data.subarray(4, 4 + nameLength));
  if (!name.ok) return { ok: false, reason: `export name: ${name.reason}` };
  const count = data.readUInt16BE(4 + nameLength);
  const rest = data.length - 6 - nameLength;
  if (rest !== 2 * count)
    return { ok: false, reason: `${count} information requests need ${2 * count} bytes, option has ${rest}` };
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameLength + 2 * i));
  return { ok: true, value: { name: name.value, infos } };
}

/** Client side: the data of NBD_OPT_INFO / NBD_OPT_GO. */
export function encodeInfoRequest(req: InfoRequest): Buffer {
  const name = Buffer.from(req.name, 'utf8');
  const buf = Buffer.alloc(4 + name.length + 2 + 2 * req.infos.length);
  buf.writeUInt32BE(name.length, 0);
  name.copy(buf, 4);
  buf.writeUInt16BE(req.infos.length, 4 + name.length);
  for (const [i, info] of req.infos.entries()) buf.writeUInt16BE(info, 6 + name.length + 2 * i);
  return buf;
}

/** Client side: proto.md "Client flags". */
export function encodeClientFlags(flags: number): Buffer {
  const buf = Buffer.alloc(WireSize.CLIENT_FLAGS);
  buf.writeUInt32BE(flags >>> 0, 0);
  return buf;
}

/** Client side: the generic option format (IHAVEOPT, option, length, data). */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(WireSize.OPTION_HEADER + data.length);
  buf.writeBigUInt64BE(IHAVEOPT, 0);
  buf.writeUInt32BE(option >>> 0, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, WireSize.OPTION_HEADER);
  return buf;
}

// ---------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------

/** proto.md "Newstyle negotiation": NBDMAGIC, IHAVEOPT, 16 bits handshake flags. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const buf = Buffer.alloc(WireSize.GREETING);
  buf.writeBigUInt64BE(NBDMAGIC, 0);
  buf.writeBigUInt64BE(IHAVEOPT, 8);
  buf.writeUInt16BE(handshakeFlags, 16);
  return buf;
}

/** proto.md "Fixed newstyle negotiation": reply magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, reply: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(WireSize.OPTION_REPLY_HEADER + data.length);
  buf.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  buf.writeUInt32BE(option >>> 0, 8);
  buf.writeUInt32BE(reply >>> 0, 12);
  buf.writeUInt32BE(data.length, 16);
  data.copy(buf, WireSize.OPTION_REPLY_HEADER);
  return buf;
}

export interface OptionReplyHeader {
  readonly option: number;
  readonly reply: number;
  readonly length: number;
}

/** Client side: decodes the 20-byte option reply header; null if the magic is wrong. */
export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader | null {
  if (buf.length < WireSize.OPTION_REPLY_HEADER || buf.readBigUInt64BE(0) !== NBD_REP_MAGIC) return null;
  return { option: buf.readUInt32BE(8), reply: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}

/** proto.md "NBD_REP_SERVER": 32 bits length of name, name, then an optional description. */
export function encodeRepServer(name: string, description = ''): Buffer {
  const n = encodeNbdString(name);
  const d = encodeNbdString(description);
  const buf = Buffer.alloc(4 + n.length + d.length);
  buf.writeUInt32BE(n.length, 0);
  n.copy(buf, 4);
  d.copy(buf, 4 + n.length);
  return buf;
}

/** proto.md "NBD_INFO_EXPORT": 16 bits type, 64 bits size, 16 bits transmission flags (length 12). */
export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const buf = Buffer.alloc(12);
  buf.writeUInt16BE(Info.NBD_INFO_EXPORT, 0);
  writeU64(buf, size, 2);
  buf.writeUInt16BE(transmissionFlags, 10);
  return buf;
}

/** proto.md "NBD_INFO_NAME" / "NBD_INFO_DESCRIPTION": 16 bits type, then the string. */
export function encodeInfoString(
  info: typeof Info.NBD_INFO_NAME | typeof Info.NBD_INFO_DESCRIPTION,
  s: string,
): Buffer {
  const str = encodeNbdString(s);
  const buf = Buffer.alloc(2 + str.length);
  buf.writeUInt16BE(info, 0);
  str.copy(buf, 2);
  return buf;
}

/** proto.md "NBD_INFO_BLOCK_SIZE": 16 bits type, 32 bits minimum, preferred, maximum (length 14). */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const buf = Buffer.alloc(14);
  buf.writeUInt16BE(Info.NBD_INFO_BLOCK_SIZE, 0);
  buf.writeUInt32BE(minimum, 2);
  buf.writeUInt32BE(preferred, 6);
  buf.writeUInt32BE(maximum, 10);
  return buf;
}

/**
 * proto.md "Newstyle negotiation": the reply to NBD_OPT_EXPORT_NAME: 64 bits size, 16 bits
 * transmission flags, 124 bytes of zeroes unless NBD_FLAG_C_NO_ZEROES was negotiated.
 */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(10 + (noZeroes ? 0 : WireSize.EXPORT_NAME_ZEROES));
  writeU64(buf, size, 0);
  buf.writeUInt16BE(transmissionFlags, 8);
  return buf;
}

/** proto.md "Simple reply message": magic, 32 bits error, 64 bits handle (data follows for a read). */
export function encodeSimpleReply(error: NbdErrno, handle: bigint): Buffer {
  const buf = Buffer.allocUnsafe(WireSize.SIMPLE_REPLY_HEADER);
  buf.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  buf.writeUInt32BE(error, 4);
  buf.writeBigUInt64BE(handle, 8);
  return buf;
}

export interface SimpleReplyHeader {
  readonly error: number;
  readonly handle: bigint;
}

/** Client side: decodes a 16-byte simple reply header; null if the magic is wrong. */
export function decodeSimpleReplyHeader(buf: Buffer): SimpleReplyHeader | null {
  if (buf.length < WireSize.SIMPLE_REPLY_HEADER || buf.readUInt32BE(0) !== NBD_SIMPLE_REPLY_MAGIC) return null;
  return { error: buf.readUInt32BE(4), handle: buf.readBigUInt64BE(8) };
}
