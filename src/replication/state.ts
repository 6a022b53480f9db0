// The engine's state and the one place it changes.
//
// `transition(current, change, ctx)` applies the facts (hard rules: without a
// connection the peer's role and disk are Unknown/DUnknown) and then checks the
// refusable requests (soft rules, DRBD's SS_* codes). The engine commits the
// result, logs the diff with its cause, and only then runs the effects, e.g.
//   role(Secondary->Primary) disk(Inconsistent->UpToDate) [primary --force]
import { isConnected, isSyncTarget, isUpToDate, type ConnectionState, type DiskState, type Role } from './states.ts';
import { REFUSALS, refuse, type StateChangeError } from './errors.ts';

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

export function transition(current: EngineState, change: StateChange, ctx: TransitionContext): TransitionResult {
  const next: EngineState = { ...current, ...change };
  // Hard rules: facts, never refused.
  if (!isConnected(next.conn)) {
    next.peerRole = 'Unknown';
    next.peerDisk = 'DUnknown';
    next.peerIsp = false;
  }
  // Soft rules: requests that may be refused.
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
