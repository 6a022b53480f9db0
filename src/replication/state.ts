// The engine's state and the one place it changes.
//
// `transition(current, change, ctx)`: sanitize (the facts: without a connection the
// peer's role and disk are Unknown/DUnknown), then the rules (the connection state
// may only move along the edges below; DRBD's SS_* refusals for roles), then the
// caller commits. `effectsOf(prev, next)` says what a committed change obliges the
// engine to do, and the engine runs those effects after the commit. Every committed
// change is logged as a diff with its cause:
//   role(Secondary->Primary) disk(Inconsistent->UpToDate) [primary --force]
import type { FencingPolicy } from '../api/config.ts';
import { REFUSALS, refuse, StateChangeError } from './errors.ts';
import {
  hasLocalDisk,
  isConnected,
  isSyncSource,
  isSyncTarget,
  isUpToDate,
  type ConnectionState,
  type DiskState,
  type Role,
} from './states.ts';

export interface EngineState {
  role: Role;
  peerRole: Role;
  conn: ConnectionState;
  disk: DiskState;
  peerDisk: DiskState;
  /** I/O frozen (DRBD's "s" in the r----- flags). */
  suspended: boolean;
  /** Resync paused by `pause-sync` here / on the peer. */
  userIsp: boolean;
  peerIsp: boolean;
}

export type StateChange = Partial<EngineState>;

export interface TransitionContext {
  allowTwoPrimaries: boolean;
  /** Open NBD clients: a Primary that is held open cannot be demoted. */
  openCount: number;
}

export type TransitionResult = { ok: true; next: EngineState; diff: string } | { ok: false; error: StateChangeError };

export function initialState(): EngineState {
  return {
    role: 'Secondary',
    peerRole: 'Unknown',
    conn: 'StandAlone',
    disk: 'Diskless',
    peerDisk: 'DUnknown',
    suspended: false,
    userIsp: false,
    peerIsp: false,
  };
}

const LOST: readonly ConnectionState[] = ['NetworkFailure', 'BrokenPipe', 'Timeout', 'ProtocolError', 'TearDown'];
const SYNC_S: readonly ConnectionState[] = ['SyncSource', 'PausedSyncS'];
const SYNC_T: readonly ConnectionState[] = ['SyncTarget', 'PausedSyncT'];

/**
 * Where the connection state may go from each state (besides StandAlone, reachable from
 * anywhere: a refusal or an abort, and Disconnecting, from anywhere but StandAlone).
 * The life of one connection: StandAlone → WFConnection → WFReportParams → Connected,
 * or WFBitMapS/T → (Paused)SyncSource/Target → Connected; Connected ⇄ VerifyS/T; a
 * renegotiation (invalidate, resize, a forced promotion) goes Connected → WFBitMapS/T;
 * losing it: any connected state → NetworkFailure/BrokenPipe/… → Unconnected → WFConnection.
 */
const EDGES: Partial<Record<ConnectionState, readonly ConnectionState[]>> = {
  StandAlone: ['WFConnection', 'Unconnected'],
  Unconnected: ['WFConnection'],
  WFConnection: ['WFReportParams'],
  WFReportParams: ['WFConnection', 'Connected', 'WFBitMapS', 'WFBitMapT', ...LOST],
  Connected: ['WFBitMapS', 'WFBitMapT', 'VerifyS', 'VerifyT', ...LOST],
  WFBitMapS: [...SYNC_S, ...LOST],
  WFBitMapT: [...SYNC_T, ...LOST],
  SyncSource: ['PausedSyncS', 'Connected', ...LOST],
  PausedSyncS: ['SyncSource', 'Connected', ...LOST],
  SyncTarget: ['PausedSyncT', 'Connected', ...LOST],
  PausedSyncT: ['SyncTarget', 'Connected', ...LOST],
  VerifyS: ['Connected', ...LOST],
  VerifyT: ['Connected', ...LOST],
  NetworkFailure: ['Unconnected'],
  BrokenPipe: ['Unconnected'],
  Timeout: ['Unconnected'],
  ProtocolError: ['Unconnected'],
  TearDown: ['Unconnected'],
  Disconnecting: [],
};

/** May the connection state move from `a` to `b`? */
export function connEdgeAllowed(a: ConnectionState, b: ConnectionState): boolean {
  if (a === b || b === 'StandAlone') return true;
  if (b === 'Disconnecting') return a !== 'StandAlone';
  return EDGES[a]?.includes(b) ?? false;
}

export function transition(current: EngineState, change: StateChange, ctx: TransitionContext): TransitionResult {
  const next: EngineState = { ...current, ...change };
  // Sanitize: facts, never refused.
  if (!isConnected(next.conn)) {
    next.peerRole = 'Unknown';
    next.peerDisk = 'DUnknown';
    next.peerIsp = false;
  }
  // Rules.
  if (!connEdgeAllowed(current.conn, next.conn))
    return {
      ok: false,
      error: new StateChangeError(-18, `connection state ${current.conn} cannot become ${next.conn}`),
    };
  if (next.role === 'Primary' && current.role !== 'Primary') {
    if (!isUpToDate(next.disk)) return { ok: false, error: refuse(REFUSALS.noUpToDateDisk) };
    if (next.peerRole === 'Primary' && !ctx.allowTwoPrimaries)
      return { ok: false, error: refuse(REFUSALS.twoPrimaries) };
    if (isSyncTarget(next.conn)) return { ok: false, error: refuse(REFUSALS.syncing) };
  }
  if (next.role === 'Secondary' && current.role === 'Primary' && ctx.openCount > 0) {
    return {
      ok: false,
      error: refuse(REFUSALS.deviceInUse, `${ctx.openCount} NBD client${ctx.openCount === 1 ? '' : 's'} connected`),
    };
  }
  return { ok: true, next, diff: describeDiff(current, next) };
}

/**
 * Connected to a peer whose disk holds a copy of the data (DRBD: pdsk Consistent or
 * UpToDate), or is becoming one: our SyncTarget gets every write, and its resync may
 * end on its side (it adopts our generation) without the last ack reaching us. Losing
 * such a peer must start a new generation as much as losing an UpToDate one (simulator
 * seed 2016: without it, the old SyncTarget promoted alone and later became SyncSource
 * over the writes we took meanwhile, with no split brain detected).
 */
export function hasPeerCopy(s: EngineState): boolean {
  return isConnected(s.conn) && (isSyncSource(s.conn) || s.peerDisk === 'UpToDate' || s.peerDisk === 'Consistent');
}

/** Someone writes to the data this node holds: it is Primary, or its connected peer is. */
function writable(s: EngineState): boolean {
  return s.role === 'Primary' || (isConnected(s.conn) && s.peerRole === 'Primary');
}

/** This node's UpToDate disk takes writes that no copy on the peer receives. */
export function soleWritableCopy(s: EngineState): boolean {
  return isUpToDate(s.disk) && writable(s) && !hasPeerCopy(s);
}

/** Primary, Connected, both disks UpToDate and I/O flowing: the peer can take over now. */
export function isWholePrimary(s: EngineState): boolean {
  return (
    s.role === 'Primary' && s.conn === 'Connected' && s.disk === 'UpToDate' && s.peerDisk === 'UpToDate' && !s.suspended
  );
}

export type Effect =
  /**
   * This node's UpToDate disk became the only copy that takes writes: it is Primary and
   * lost its peer for any reason (the link, a `disconnect` on either side, the peer's
   * `down` or crash, the peer's disk detached), or its Primary lost its own disk and
   * writes through this node (before or since they connected). The data here moves
   * ahead of the other copy, so this node starts a new data generation before any
   * further write completes (DRBD's new current UUID). A later reconnect then resyncs
   * from here, and a peer promoted meanwhile makes a split brain that the generation
   * identifiers show. (A promotion while alone starts one in promote() itself.)
   */
  | { kind: 'new-generation' }
  /** The same moment, with fencing on: make sure the peer cannot be promoted (freeze first with resource-and-stonith). */
  | { kind: 'fence-peer'; freeze: boolean }
  /** DRBD 9's unfence-peer: whole again, a fence on the peer can be lifted. */
  | { kind: 'unfence-peer' }
  /** A Primary without good local data lost the peer that held it. */
  | { kind: 'pri-on-incon-degr' };

export function effectsOf(prev: EngineState, next: EngineState, fencing: FencingPolicy): Effect[] {
  const out: Effect[] = [];
  if (!soleWritableCopy(prev) && soleWritableCopy(next) && prev.role === next.role)
    out.push({ kind: 'new-generation' });
  const lostPeer = prev.role === 'Primary' && isConnected(prev.conn) && !isConnected(next.conn);
  // A SyncTarget counts: its resync may have ended on its side (seed 5867: the Primary,
  // cut off from the arbiter, wrote on alone while the finished target was failed over to).
  if (lostPeer && fencing !== 'dont-care' && hasPeerCopy(prev) && next.role === 'Primary')
    out.push({ kind: 'fence-peer', freeze: fencing === 'resource-and-stonith' });
  if (lostPeer && !hasLocalDisk(next.disk)) out.push({ kind: 'pri-on-incon-degr' });
  if (!isWholePrimary(prev) && isWholePrimary(next)) out.push({ kind: 'unfence-peer' });
  return out;
}

const LABELS: [keyof EngineState, string][] = [
  ['role', 'role'],
  ['peerRole', 'peer'],
  ['conn', 'conn'],
  ['disk', 'disk'],
  ['peerDisk', 'pdsk'],
  ['suspended', 'susp'],
  ['userIsp', 'user_isp'],
  ['peerIsp', 'peer_isp'],
];

export function describeDiff(a: EngineState, b: EngineState): string {
  return LABELS.filter(([k]) => a[k] !== b[k])
    .map(([k, label]) => `${label}(${String(a[k])}->${String(b[k])})`)
    .join(' ');
}
