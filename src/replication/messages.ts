// The peer protocol's messages, typed. A frame from the wire (wire.ts) is decoded
// here once, into one member of PeerMessage, and validated: JSON bodies with zod,
// binary bodies by length (wire.ts MIN_PAYLOAD) and by the bounds below. Handlers
// receive typed values and never decode at the point of use; a frame that does not
// decode is a protocol error that ends the connection.
import { z } from 'zod';
import {
  DATA_FLAGS,
  FRAME_FLAGS,
  P,
  decodeBarrierAck,
  decodeData,
  decodeRange,
  decodeReadReply,
  decodeReadRequest,
  decodeRsData,
  decodeSeq,
  decodeVerify,
  decodeZero,
  encodeBarrierAck,
  encodeData,
  encodeFrame,
  encodeJson,
  encodeRange,
  encodeReadReply,
  encodeReadRequest,
  encodeRsData,
  encodeSeq,
  encodeVerify,
  encodeZero,
  type Frame,
} from './wire.ts';

const Uuid = z.string().regex(/^[0-9A-F]{16}$/);
export const UuidsJson = z.object({ current: Uuid, bitmap: Uuid, history: z.tuple([Uuid, Uuid]) });
export type UuidsJson = z.infer<typeof UuidsJson>;

/** What each side tells the other on connect (and on renegotiation): enough to decide alone, see sync-plan.ts. */
export const Params = z.object({
  reply: z.boolean(),
  protocol: z.enum(['A', 'B', 'C']),
  capacity: z.number().int().nonnegative(),
  laSize: z.number().int().nonnegative(),
  uuids: UuidsJson,
  disk: z.enum([
    'Diskless',
    'Attaching',
    'Failed',
    'Negotiating',
    'Inconsistent',
    'Outdated',
    'DUnknown',
    'Consistent',
    'UpToDate',
  ]),
  role: z.enum(['Primary', 'Secondary']),
  allowTwoPrimaries: z.boolean(),
  discardMyData: z.boolean(),
  crashedPrimary: z.boolean(),
  /** This node's machine restarted while it held unflushed writes (see metadata.ts cacheLost). */
  cacheLost: z.boolean(),
  node: z.string(),
  /** Blocks changed since the last common generation (own bitmap count), for split-brain policies. */
  changes: z.number().int().nonnegative(),
  primaryAtSplit: z.boolean(),
  /** `invalidate` (the sender wants to be the full-sync target) or `invalidate-remote` (the receiver should be). */
  invalidate: z.enum(['none', 'self', 'peer']),
  /** `resize`: both sides re-read their disk sizes and may grow the device. */
  resize: z.boolean(),
});
export type Params = z.infer<typeof Params>;

export const StateMsg = z.object({
  role: z.enum(['Primary', 'Secondary']).optional(),
  disk: z.enum(['Diskless', 'Failed', 'Inconsistent', 'Outdated', 'Consistent', 'UpToDate']).optional(),
  /** Two-phase promotion: ask the peer before becoming Primary while connected. */
  promoteRequest: z.number().int().optional(),
  promoteReply: z.object({ id: z.number().int(), ok: z.boolean(), message: z.string().optional() }).optional(),
  syncPaused: z.boolean().optional(),
  /** `new-current-uuid --clear-bitmap` on the peer: both blank disks are declared identical. */
  clearBitmapUuid: UuidsJson.optional(),
  verifyStart: z.boolean().optional(),
  /** DRBD's P_SYNC_UUID: the generation a full-sync target carries until it is done, so an interrupted sync resumes. */
  syncUuid: Uuid.optional(),
  verifyDone: z.object({ oosBlocks: z.number().int().nonnegative() }).optional(),
});
export type StateMsg = z.infer<typeof StateMsg>;

/**
 * Every message after the handshake. Large payloads (`data` of DATA and RS_DATA)
 * are views into `payload`, the frame's buffer, which the receiver gives back to
 * its pool once the data is on disk.
 */
export type PeerMessage =
  | { type: 'params'; params: Params }
  | { type: 'state'; state: StateMsg }
  | { type: 'bitmap'; chunk: Buffer; last: boolean }
  | { type: 'error'; message: string }
  | { type: 'sync-done'; uuids: UuidsJson }
  | { type: 'sync-done-ack' }
  | { type: 'data'; seq: number; fua: boolean; offset: number; data: Buffer; payload: Buffer }
  /** A mirrored TRIM or WRITE_ZEROES: the range reads as zeroes afterwards; `punch`: give the space back. */
  | { type: 'zero'; seq: number; fua: boolean; punch: boolean; offset: number; length: number }
  | { type: 'recv-ack'; seq: number }
  | { type: 'write-ack'; seq: number }
  | { type: 'neg-ack'; seq: number; errno: number }
  | { type: 'barrier'; epoch: number }
  | { type: 'barrier-ack'; epoch: number; writes: number; errno: number }
  | { type: 'rs-data'; offset: number; data: Buffer; payload: Buffer }
  | { type: 'rs-ack'; offset: number; length: number }
  | { type: 'rs-neg-ack'; offset: number; length: number }
  | { type: 'rs-zero'; offset: number; length: number }
  | { type: 'rs-csum'; offset: number; length: number; digests: Buffer }
  | { type: 'rs-csum-reply'; offset: number; length: number; differ: Buffer }
  | { type: 'verify-req'; offset: number; length: number; digests: Buffer }
  | { type: 'verify-reply'; offset: number; length: number; mismatch: Buffer }
  | { type: 'read-req'; id: number; offset: number; length: number }
  | { type: 'read-reply'; id: number; errno: number; data: Buffer };

export type MessageType = PeerMessage['type'];

/** A frame that does not decode: the stream cannot be trusted, the connection ends. */
export class PeerProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PeerProtocolError';
  }
}

/** Ranges the peer may ask about (verify, checksums, reads through a Diskless Primary): at most 32 MiB each. */
export const MAX_PEER_RANGE = 32 * 1024 * 1024;

function json<T>(schema: z.ZodType<T>, f: Frame, what: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(f.payload.toString('utf8'));
  } catch {
    throw new PeerProtocolError(`${what}: not JSON`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new PeerProtocolError(`${what}: ${r.error.issues[0]?.message ?? 'invalid'}`);
  return r.data;
}

function range(offset: number, length: number, what: string): void {
  if (!Number.isSafeInteger(offset) || length > MAX_PEER_RANGE)
    throw new PeerProtocolError(`${what} [${offset}, +${length}) exceeds ${MAX_PEER_RANGE} bytes`);
}

/** Decodes one frame; PING/PING_ACK/HELLO/AUTH never get here (the link handles them). */
export function decodeMessage(f: Frame): PeerMessage {
  switch (f.type) {
    case P.PARAMS:
      return { type: 'params', params: json(Params, f, 'PARAMS') };
    case P.STATE:
      return { type: 'state', state: json(StateMsg, f, 'STATE') };
    case P.BITMAP:
      return { type: 'bitmap', chunk: f.payload, last: (f.flags & FRAME_FLAGS.LAST) !== 0 };
    case P.ERROR: {
      const m = json(z.object({ message: z.string() }), f, 'ERROR');
      return { type: 'error', message: m.message.slice(0, 500) };
    }
    case P.SYNC_DONE:
      return { type: 'sync-done', uuids: json(z.object({ uuids: UuidsJson }), f, 'SYNC_DONE').uuids };
    case P.SYNC_DONE_ACK:
      return { type: 'sync-done-ack' };
    case P.DATA: {
      const d = decodeData(f.payload);
      return {
        type: 'data',
        seq: d.seq,
        fua: (d.flags & DATA_FLAGS.FUA) !== 0,
        offset: d.offset,
        data: d.data,
        payload: f.payload,
      };
    }
    case P.ZERO: {
      const z = decodeZero(f.payload);
      range(z.offset, z.length, 'ZERO');
      return {
        type: 'zero',
        seq: z.seq,
        fua: (z.flags & DATA_FLAGS.FUA) !== 0,
        punch: (z.flags & DATA_FLAGS.TRIM) !== 0,
        offset: z.offset,
        length: z.length,
      };
    }
    case P.RECV_ACK:
      return { type: 'recv-ack', seq: decodeSeq(f.payload).seq };
    case P.WRITE_ACK:
      return { type: 'write-ack', seq: decodeSeq(f.payload).seq };
    case P.NEG_ACK: {
      const { seq, errno } = decodeSeq(f.payload);
      return { type: 'neg-ack', seq, errno };
    }
    case P.BARRIER:
      return { type: 'barrier', epoch: decodeSeq(f.payload).seq };
    case P.BARRIER_ACK:
      return { type: 'barrier-ack', ...decodeBarrierAck(f.payload) };
    case P.RS_DATA: {
      const d = decodeRsData(f.payload);
      return { type: 'rs-data', offset: d.offset, data: d.data, payload: f.payload };
    }
    case P.RS_ACK:
      return { type: 'rs-ack', ...decodeRange(f.payload) };
    case P.RS_NEG_ACK:
      return { type: 'rs-neg-ack', ...decodeRange(f.payload) };
    case P.RS_ZERO: {
      const r = decodeRange(f.payload);
      range(r.offset, r.length, 'RS_ZERO');
      return { type: 'rs-zero', ...r };
    }
    case P.RS_CSUM:
    case P.RS_CSUM_REPLY:
    case P.VERIFY_REQ:
    case P.VERIFY_REPLY: {
      const v = decodeVerify(f.payload);
      range(v.offset, v.length, 'digest range');
      if (f.type === P.RS_CSUM) return { type: 'rs-csum', offset: v.offset, length: v.length, digests: v.body };
      if (f.type === P.RS_CSUM_REPLY)
        return { type: 'rs-csum-reply', offset: v.offset, length: v.length, differ: v.body };
      if (f.type === P.VERIFY_REQ) return { type: 'verify-req', offset: v.offset, length: v.length, digests: v.body };
      return { type: 'verify-reply', offset: v.offset, length: v.length, mismatch: v.body };
    }
    case P.READ_REQ: {
      const r = decodeReadRequest(f.payload);
      range(r.offset, r.length, 'READ_REQ');
      return { type: 'read-req', id: r.id, offset: r.offset, length: r.length };
    }
    case P.READ_REPLY:
      return { type: 'read-reply', ...decodeReadReply(f.payload) };
    default:
      throw new PeerProtocolError(`unexpected packet type 0x${f.type.toString(16)}`);
  }
}

/** The wire form of a message (the frame header included); the last buffer of DATA/RS_DATA is the caller's data, not a copy. */
export function encodeMessage(m: PeerMessage): Buffer[] {
  switch (m.type) {
    case 'params':
      return encodeJson(P.PARAMS, m.params);
    case 'state':
      return encodeJson(P.STATE, m.state);
    case 'bitmap':
      return encodeFrame(P.BITMAP, m.chunk, m.last ? FRAME_FLAGS.LAST : 0);
    case 'error':
      return encodeJson(P.ERROR, { message: m.message });
    case 'sync-done':
      return encodeJson(P.SYNC_DONE, { uuids: m.uuids });
    case 'sync-done-ack':
      return encodeFrame(P.SYNC_DONE_ACK);
    case 'data':
      return encodeData(m.seq, m.offset, m.data, m.fua ? DATA_FLAGS.FUA : 0);
    case 'zero':
      return encodeZero(m.seq, m.offset, m.length, (m.fua ? DATA_FLAGS.FUA : 0) | (m.punch ? DATA_FLAGS.TRIM : 0));
    case 'recv-ack':
      return encodeSeq(P.RECV_ACK, m.seq);
    case 'write-ack':
      return encodeSeq(P.WRITE_ACK, m.seq);
    case 'neg-ack':
      return encodeSeq(P.NEG_ACK, m.seq, m.errno);
    case 'barrier':
      return encodeSeq(P.BARRIER, m.epoch);
    case 'barrier-ack':
      return encodeBarrierAck(m.epoch, m.writes, m.errno);
    case 'rs-data':
      return encodeRsData(m.offset, m.data);
    case 'rs-ack':
      return encodeRange(P.RS_ACK, m.offset, m.length);
    case 'rs-neg-ack':
      return encodeRange(P.RS_NEG_ACK, m.offset, m.length);
    case 'rs-zero':
      return encodeRange(P.RS_ZERO, m.offset, m.length);
    case 'rs-csum':
      return encodeVerify(P.RS_CSUM, m.offset, m.length, m.digests);
    case 'rs-csum-reply':
      return encodeVerify(P.RS_CSUM_REPLY, m.offset, m.length, m.differ);
    case 'verify-req':
      return encodeVerify(P.VERIFY_REQ, m.offset, m.length, m.digests);
    case 'verify-reply':
      return encodeVerify(P.VERIFY_REPLY, m.offset, m.length, m.mismatch);
    case 'read-req':
      return encodeReadRequest(m.id, m.offset, m.length);
    case 'read-reply':
      return encodeReadReply(m.id, m.errno, m.data);
  }
}
