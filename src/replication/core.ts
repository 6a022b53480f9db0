// What the engine's parts share: the engine (engine.ts) implements Core, and the
// write path, the receiver, the resync and online verify each get it. A part reads
// the state through it and changes the state only through `fact`/`commit`, so
// every change still goes through the state machine (state.ts) with its cause.
import type { Logger } from 'pino';
import type { HostConfig, ResourceConfig } from '../api/config.ts';
import type { PayloadPool } from '../net/payload-pool.ts';
import type { ActivityLog } from './activity-log.ts';
import type { Counters } from './counters.ts';
import type { HandlerName } from './handlers.ts';
import type { IntervalLock } from './interval-lock.ts';
import type { PeerMessage, Params } from './messages.ts';
import type { Metadata } from './metadata.ts';
import type { EngineState, StateChange } from './state.ts';
import type { BlockFile, PeerConnection, World } from './world.ts';

/** The attached local disk: data device, metadata, activity log. */
export interface LocalDisk {
  readonly data: BlockFile;
  readonly md: Metadata;
  readonly al: ActivityLog;
}

export interface Core {
  readonly config: ResourceConfig;
  readonly self: HostConfig;
  readonly world: World;
  readonly log: Logger;
  readonly counters: Counters;
  /** Conflicting requests (application writes, mirrored writes, resync and verify reads) in arrival order. */
  readonly lock: IntervalLock;
  /** Large payloads received from the peer, reused once they are on disk. */
  readonly payloads: PayloadPool;
  readonly state: EngineState;
  /** The device size the application sees. */
  readonly size: number;
  /** Usable bytes of the local disk. */
  readonly capacity: number;
  /** When attached. */
  readonly local: LocalDisk | undefined;
  /** The connection to the peer once the handshake is done; `peerParams` says whether PARAMS were exchanged. */
  readonly conn: PeerConnection | undefined;
  readonly peerParams: Params | undefined;
  /** A fact about the world (a refusal here is a bug: logged, then applied). */
  fact(change: StateChange, cause: string): void;
  /** Sends a message; `onSent`: it was handed to the network. */
  send(c: PeerConnection, m: PeerMessage, onSent?: () => void): boolean;
  /** Writes changed bitmap pages (clear bits only after the data they describe is durable). */
  persistBitmap(sync: boolean): Promise<void>;
  /**
   * The last new data generation this node started is on disk; rejects if it could not be
   * recorded (the disk was detached then). Resolves at once when none is under way.
   */
  newGenerationRecorded(): Promise<void>;
  /** A local disk operation failed: DRBD's on-io-error decides. */
  localIoError(err: unknown, what: string): Promise<'detached' | 'passed'>;
  /** A local disk that takes I/O. */
  localDiskUsable(): boolean;
  handler(name: HandlerName, extraEnv?: Record<string, string>): Promise<number | undefined>;
  /**
   * Work nobody waits for (a handler run, a background write): its failure is logged,
   * never an unhandled rejection. `disk`: a failure is a local disk error (on-io-error).
   */
  spawn(what: string, p: Promise<unknown>, disk?: boolean): void;
  /** The application did I/O now (the resync rate controller backs off). */
  lastAppIo: number;
  /** A SyncTarget now holds its source's data durably (`connected`: the link still stood when it finished). */
  synced(connected: boolean): void;
  /** A split-brain victim's own version of a range is saved (durably) before the range is overwritten. */
  saveBeforeOverwrite(offset: number, length: number): Promise<void>;
}

/**
 * Zeroes [offset, offset+length) of the local disk (punching a hole where `punch` and the
 * file allow), synced when `fua`, counted as local I/O: the application's WRITE_ZEROES/TRIM
 * on a Primary and the peer's ZERO on a Secondary both land through here.
 */
export async function zeroLocally(
  core: Core,
  file: BlockFile,
  offset: number,
  length: number,
  fua: boolean,
  punch: boolean,
): Promise<void> {
  core.counters.lo++;
  try {
    await file.zeroRange(offset, length, punch);
    if (fua) await file.datasync();
    core.counters.dw += length;
  } finally {
    core.counters.lo--;
  }
}

export function eio(message: string): Error {
  return Object.assign(new Error(message), { code: 'EIO' });
}
