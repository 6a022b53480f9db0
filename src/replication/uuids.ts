// Generation identifiers (DRBD's "data generation UUIDs") and the decision a
// pair makes when it connects: who has the newer data, and how much must move.
//
// Each disk carries: current (the generation its data belongs to), bitmap (the
// generation the dirty bitmap is relative to; 0 when the bitmap is not tracking
// against a peer), and two history entries. The rules for when they change:
//  - create-md: current = JUST_CREATED, everything else 0.
//  - a Primary (or a disk promoted while disconnected) starts a new generation:
//    bitmap = current (if bitmap was 0, else the older bitmap stays), current = random.
//  - a resync finishes: the target adopts the source's current; the source's
//    bitmap moves into history.
// Bit 0 of every UUID is the "was Primary" flag, ignored in comparisons.
import type { Random } from './world.ts';

export const UUID_JUST_CREATED = 4n;

export interface Uuids {
  current: bigint;
  bitmap: bigint;
  history: [bigint, bigint];
}

export function freshUuids(): Uuids {
  return { current: UUID_JUST_CREATED, bitmap: 0n, history: [0n, 0n] };
}

export function randomUuid(random: Random): bigint {
  // Never 0, never JUST_CREATED, bit 0 cleared (it carries the primary flag).
  let v = 0n;
  while (v === 0n || v === UUID_JUST_CREATED) v = random.bytes(8).readBigUInt64LE(0) & ~1n;
  return v;
}

const strip = (u: bigint): bigint => u & ~1n;

/** A new data generation: what a Primary does when it loses its peer, or a disk promoted while alone. */
export function newCurrent(u: Uuids, random: Random): Uuids {
  const bitmap = u.bitmap === 0n ? u.current : u.bitmap;
  const history: [bigint, bigint] = u.bitmap === 0n ? u.history : [u.current, u.history[0]];
  return { current: randomUuid(random), bitmap, history };
}

/** The SyncSource's side at resync end: the bitmap generation becomes history. */
export function finishSyncSource(u: Uuids): Uuids {
  if (u.bitmap === 0n) return u;
  return { current: u.current, bitmap: 0n, history: [u.bitmap, u.history[0]] };
}

/** The SyncTarget's side at resync end: it now holds the source's generation. */
export function finishSyncTarget(u: Uuids, source: Uuids): Uuids {
  const history: [bigint, bigint] =
    strip(u.current) === strip(source.current) || u.current === UUID_JUST_CREATED
      ? source.history
      : [u.current, source.history[0]];
  return { current: source.current, bitmap: 0n, history };
}

export const SYNC_DECISIONS = {
  /** Same generation: nothing to move. */
  none: 'none',
  /** We are SyncSource, only the bitmap's blocks move. */
  bitmapSource: 'bitmap-source',
  bitmapTarget: 'bitmap-target',
  /** We are SyncSource of a full resync. */
  fullSource: 'full-source',
  fullTarget: 'full-target',
  /** Both sides wrote since a common generation: split brain that a bitmap resync can repair. */
  splitBrain: 'split-brain',
  /** Both diverged and no common ancestor is known: only a full resync can repair it. */
  splitBrainUnrelated: 'split-brain-unrelated',
  /** Two disks of different resources (or re-created metadata): refuse to connect. */
  unrelated: 'unrelated-data',
} as const;
export type SyncDecision = (typeof SYNC_DECISIONS)[keyof typeof SYNC_DECISIONS];

export interface UuidComparison {
  decision: SyncDecision;
  /** Which rule decided, for logs and `status --json`. */
  rule: string;
}

/**
 * DRBD's uuid_compare as a pure function. `self` and `peer` are the two disks'
 * identifiers; the answer is symmetric (compare(a,b) mirrors compare(b,a)).
 */
export function compareUuids(self: Uuids, peer: Uuids): UuidComparison {
  const s = strip(self.current);
  const p = strip(peer.current);
  if (s === UUID_JUST_CREATED && p === UUID_JUST_CREATED) return { decision: 'none', rule: 'both disks are new' };
  if (s === UUID_JUST_CREATED) return { decision: 'full-target', rule: 'our disk is new' };
  if (p === UUID_JUST_CREATED) return { decision: 'full-source', rule: "the peer's disk is new" };
  if (s === p) {
    // Same generation. A leftover bitmap generation on one side means a resync
    // had been finished by the other side but the ack was lost: nothing to move.
    return { decision: 'none', rule: 'same current generation' };
  }
  // Each test is asked in both directions; if both directions claim the newer
  // data the histories are crossed, which only a split brain can produce.
  const peerBitmapIsOurs = strip(peer.bitmap) !== 0n && strip(peer.bitmap) === s;
  const ourBitmapIsPeers = strip(self.bitmap) !== 0n && strip(self.bitmap) === p;
  if (peerBitmapIsOurs && ourBitmapIsPeers) return { decision: 'split-brain', rule: 'crossed bitmap generations' };
  if (peerBitmapIsOurs) return { decision: 'bitmap-target', rule: "peer's bitmap generation is our current" };
  if (ourBitmapIsPeers) return { decision: 'bitmap-source', rule: "our bitmap generation is the peer's current" };
  const inPeerHistory = peer.history.some((h) => h !== 0n && strip(h) === s);
  const inOurHistory = self.history.some((h) => h !== 0n && strip(h) === p);
  if (inPeerHistory && inOurHistory) return { decision: 'split-brain-unrelated', rule: 'crossed history generations' };
  if (inPeerHistory) return { decision: 'full-target', rule: "our current is in the peer's history" };
  if (inOurHistory) return { decision: 'full-source', rule: "the peer's current is in our history" };
  if (strip(self.bitmap) !== 0n && strip(self.bitmap) === strip(peer.bitmap))
    return { decision: 'split-brain', rule: 'both sides started a new generation from the same one' };
  const related = [self.bitmap, ...self.history].some(
    (x) => x !== 0n && [peer.bitmap, ...peer.history].some((y) => strip(x) === strip(y)),
  );
  if (related)
    return { decision: 'split-brain-unrelated', rule: 'both sides diverged, a common ancestor lies in history only' };
  return { decision: 'unrelated-data', rule: 'no generation in common' };
}

export function uuidHex(u: bigint): string {
  return u.toString(16).toUpperCase().padStart(16, '0');
}

export function uuidsToJson(u: Uuids): { current: string; bitmap: string; history: [string, string] } {
  return {
    current: uuidHex(u.current),
    bitmap: uuidHex(u.bitmap),
    history: [uuidHex(u.history[0]), uuidHex(u.history[1])],
  };
}

export function uuidsFromJson(j: { current: string; bitmap: string; history: [string, string] }): Uuids {
  return {
    current: BigInt(`0x${j.current}`),
    bitmap: BigInt(`0x${j.bitmap}`),
    history: [BigInt(`0x${j.history[0]}`), BigInt(`0x${j.history[1]}`)],
  };
}
