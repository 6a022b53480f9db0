// The engine's outside world, behind small interfaces: the clock and its timers,
// the disks, the peer transport, the handler runs and the random numbers that
// become generation identifiers. The engine never reaches past them.
//
// Two implementations exist: the real one (real-world.ts: node:fs, TCP, /bin/sh,
// crypto), and the simulator's (src/sim: an event queue's clock, disks with a
// volatile write cache that power loss empties, an in-memory network that can be
// cut and delayed, scripted handlers, a seeded generator). Because every source
// of time, I/O and chance comes through here, two engines can run in one process
// under the simulator and a failing seed replays exactly.
import type { Frame } from './wire.ts';
import type { ConnectionState } from './states.ts';
import type { HandlerName } from './handlers.ts';
import type { Logger } from 'pino';
import type { Address } from '../api/config.ts';
import type { PayloadPool } from '../net/payload-pool.ts';

/** A scheduled callback; cancel() is a no-op once it ran. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds on a monotonic-enough scale (wall clock in real life, simulated time in the simulator). */
  now(): number;
  /** Runs `fn` once after `ms`; never keeps the process alive by itself. */
  after(ms: number, fn: () => void): Timer;
  /** Runs `fn` every `ms`; never keeps the process alive by itself. */
  every(ms: number, fn: () => void): Timer;
  sleep(ms: number): Promise<void>;
}

/**
 * An open backing device or metadata device. Writes may sit in a volatile cache
 * (the page cache, a disk's write cache) until `datasync` returns: only then do
 * they survive a power loss.
 */
export interface BlockFile {
  readonly path: string;
  /** Exactly `length` bytes; past the end of a sparse file reads zeroes. */
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Afterwards the range reads as zeroes (durable after datasync, like a write). `punch`:
   * give the space back (a hole in a file, a discard on a device) where the storage can.
   */
  zeroRange(offset: number, length: number, punch: boolean): Promise<void>;
  /** Everything written before the call is durable when it resolves. */
  datasync(): Promise<void>;
  /**
   * A regular file's new size (a file grows sparse, with zeroes); durable after datasync.
   * Only a file tandem owns is ever resized (a pool file growing with its volume).
   */
  truncate(size: number): Promise<void>;
  close(): Promise<void>;
}

export interface Storage {
  /** Size of a backing path; a block device's from sysfs. */
  sizeOf(path: string): Promise<{ size: number; isBlockDevice: boolean }>;
  open(path: string): Promise<BlockFile>;
  /** Creates (or truncates) a file of `size` bytes: the image of a split-brain victim's discarded blocks. */
  create(path: string, size: number): Promise<BlockFile>;
  mkdirp(path: string): Promise<void>;
  writeText(path: string, text: string): Promise<void>;
  /** A small file's text, undefined when it does not exist. */
  readText(path: string): Promise<string | undefined>;
  /**
   * Replaces a small file atomically and durably: a crash or power loss leaves the old
   * text or the new one, and the new one survives once this resolves.
   */
  writeTextDurable(path: string, text: string): Promise<void>;
  /** Removes a file (if there), durably. */
  removeDurable(path: string): Promise<void>;
}

/** An established, authenticated connection to the peer (peer-link.ts's Connection, or the simulator's). */
export interface PeerConnection {
  /** Queues buffers; `onSent` runs once they were handed to the network (protocol A's ack point). */
  send(bufs: Buffer[], onSent?: () => void): boolean;
  /**
   * Runs `fn` once what was queued so far is handed to the network (at once if nothing
   * waits), and settles as its promise does. The Primary's local write of a mirrored
   * request goes through here: its DATA frame leaves first, so the peer receives and
   * writes while this node writes, as DRBD submits the local bio after queueing the send.
   */
  afterFlush<T>(fn: () => Promise<T>): Promise<T>;
  /** Installs the frame handler (frames that arrived with the handshake are replayed). */
  setHandler(h: (f: Frame) => void): void;
  /** Ends the connection; `flush`: what was queued (an ERROR saying why) still reaches the peer. */
  close(state: ConnectionState, reason: string, flush?: boolean): void;
  onClose: ((state: ConnectionState, reason: string) => void) | undefined;
  readonly isClosed: boolean;
  /** Bytes queued and not yet taken by the network: the sender's back-pressure signal. */
  readonly queuedBytes: number;
  /** Resolves once queuedBytes is at or below `bytes` (or the connection closed). */
  whenQueuedBelow(bytes: number): Promise<void>;
  /** The receiver's back-pressure: stop taking bytes from the network until resumeReading. */
  pauseReading(): void;
  resumeReading(): void;
}

export interface LinkEvents {
  connected: [PeerConnection];
  /** The link's own transitions while not connected: WFConnection, WFReportParams, and why an attempt failed. */
  state: [ConnectionState, string];
  refused: [string];
}

/** Dials or listens for the peer, authenticates it, and hands over a PeerConnection. */
export interface PeerLinkHandle {
  readonly dials: boolean;
  on<K extends keyof LinkEvents>(event: K, listener: (...args: LinkEvents[K]) => void): unknown;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** An established connection ended: wait for the next one. */
  resume(): void;
}

export interface LinkOptions {
  resource: string;
  nodeName: string;
  peerName: string;
  self: Address;
  peer: Address;
  sharedSecret: string | undefined;
  hmacAlg: string;
  /** TLS 1.3 with mutual authentication (PEM files): the peer's certificate must name `peerName`. */
  tls?: { ca: string; cert: string; key: string };
  connectIntMs: number;
  pingIntMs: number;
  pingTimeoutMs: number;
  handshakeTimeoutMs?: number;
  /** Where large received payloads (DATA, RS_DATA) are allocated; the engine gives them back. */
  payloads?: PayloadPool;
  logger: Logger;
}

export interface PeerTransport {
  link(opts: LinkOptions): PeerLinkHandle;
}

export interface HandlerRun {
  resource: string;
  minor: number;
  peerAddress: string | undefined;
  peerAf: 'ipv4' | 'ipv6' | undefined;
  peerName: string | undefined;
  configFile: string | undefined;
  logger: Logger;
}

/** Runs a DRBD handler's command; resolves with its exit code (undefined: none configured, -1: did not run or timed out). */
export interface HandlerRunner {
  run(
    name: HandlerName,
    command: string | undefined,
    ctx: HandlerRun,
    extraEnv?: Record<string, string>,
  ): Promise<number | undefined>;
}

export interface Random {
  /** `n` random bytes. */
  bytes(n: number): Buffer;
}

/** The machine the engine runs on. */
export interface Host {
  /**
   * Identifies this boot of the machine (Linux: /proc/sys/kernel/random/boot_id, as 64 bits).
   * A process crash keeps it, and the page cache with it; a reboot or power loss changes it.
   */
  bootId(): bigint;
}

export interface World {
  host: Host;
  clock: Clock;
  storage: Storage;
  transport: PeerTransport;
  handlers: HandlerRunner;
  random: Random;
}
