// The simulated network between the two nodes: one bidirectional path that can be
// cut, healed and slowed. Bytes travel as the engines' own frames (encoded with
// the real codec, parsed on arrival with the real FrameParser), in order per
// direction, after a seeded latency. The handshake is not simulated (the real
// PeerLink's is covered by the integration tests): when both nodes listen and the
// path is up, a connection forms. A cut drops what is in flight; each side notices
// after its own ping timeout. A process that dies closes its sockets (the peer sees
// the connection end soon); a node that loses power does not (the peer waits for
// its ping timeout).
import { EventEmitter } from 'node:events';
import type { ConnectionState } from '../replication/states.ts';
import { FrameParser, type Frame } from '../replication/wire.ts';
import type {
  LinkEvents,
  LinkOptions,
  PeerConnection,
  PeerLinkHandle,
  PeerTransport,
  Timer,
} from '../replication/world.ts';
import type { EventQueue } from './clock.ts';
import type { Rng } from './rng.ts';

export interface NetTiming {
  /** One-way latency in ms: [min, max]. */
  latency: [number, number];
  /** Extra latency while slowed. */
  spike: [number, number];
  /** How long a side takes to notice a dead path (ping-int + ping-timeout): [min, max] ms. */
  detect: [number, number];
  /** How long until a new connection forms once both sides listen: [min, max] ms. */
  connect: [number, number];
}

class SimConnection implements PeerConnection {
  readonly #net: SimNetwork;
  readonly node: string;
  peer: SimConnection | undefined;
  readonly #parser: FrameParser;
  #handler: ((f: Frame) => void) | undefined;
  readonly #backlog: Frame[] = [];
  #closed = false;
  #paused = false;
  /** Bytes delivered while reading was paused, in order. */
  readonly #inbox: Buffer[] = [];
  #queued = 0;
  #lastArrival = 0;
  #drainWaiters: { bytes: number; resolve: () => void }[] = [];
  /** The path this connection was made on: a cut ends it for good, even if the path heals. */
  readonly #gen: number;
  onClose: ((state: ConnectionState, reason: string) => void) | undefined;
  readonly alive: () => boolean;

  constructor(net: SimNetwork, node: string, alive: () => boolean, opts: LinkOptions) {
    this.#net = net;
    this.node = node;
    this.alive = alive;
    this.#gen = net.pathGeneration;
    const pool = opts.payloads;
    this.#parser = new FrameParser(pool ? { allocPayload: (n) => pool.take(n) } : {});
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  get queuedBytes(): number {
    return this.#queued;
  }

  send(bufs: Buffer[], onSent?: () => void): boolean {
    if (this.#closed || !this.alive()) return false;
    const bytes = Buffer.concat(bufs);
    this.#queued += bytes.length;
    const peer = this.peer;
    const q = this.#net.queue;
    const arrival = Math.max(this.#lastArrival, q.now + this.#net.latency());
    this.#lastArrival = arrival;
    q.at(arrival - q.now, () => {
      this.#queued -= bytes.length;
      this.#wakeDrain();
      if (this.#gen !== this.#net.pathGeneration || !this.#net.up) return; // lost on a cut path
      peer?.deliver(bytes);
    });
    if (onSent) q.at(0.001, onSent, this.alive);
    return true;
  }

  /** A send is handed to the simulated network at once. */
  afterFlush<T>(fn: () => Promise<T>): Promise<T> {
    return fn();
  }

  whenQueuedBelow(bytes: number): Promise<void> {
    if (this.#closed || this.#queued <= bytes) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push({ bytes, resolve }));
  }

  #wakeDrain(): void {
    const ready = this.#drainWaiters.filter((w) => this.#closed || this.#queued <= w.bytes);
    this.#drainWaiters = this.#drainWaiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  private deliver(bytes: Buffer): void {
    if (this.#closed || !this.alive()) return;
    if (this.#paused) {
      this.#inbox.push(bytes);
      return;
    }
    this.feed(bytes);
  }

  private feed(bytes: Buffer): void {
    const r = this.#parser.feed(bytes);
    for (const f of r.frames) {
      if (this.#closed) return;
      if (this.#handler) this.#handler(f);
      else this.#backlog.push(f);
    }
    if (r.error) this.close('ProtocolError', r.error);
  }

  setHandler(h: (f: Frame) => void): void {
    this.#handler = h;
    const pending = this.#backlog.splice(0);
    for (const f of pending) if (!this.#closed) h(f);
  }

  pauseReading(): void {
    this.#paused = true;
  }

  resumeReading(): void {
    if (!this.#paused) return;
    this.#paused = false;
    // Resume on the next turn, as a socket would: not inside the caller's stack.
    this.#net.queue.at(
      0.001,
      () => {
        while (!this.#paused && this.#inbox.length > 0 && !this.#closed) this.feed(this.#inbox.shift()!);
      },
      this.alive,
    );
  }

  close(state: ConnectionState, reason: string, flush = false): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeDrain();
    this.#net.closed(this, flush);
    this.onClose?.(state, reason);
  }

  /** The peer's end closed (or the path died): this side learns it. */
  lost(state: ConnectionState, reason: string): void {
    if (this.#closed || !this.alive()) return;
    this.close(state, reason);
  }
}

class SimLink extends EventEmitter<LinkEvents> implements PeerLinkHandle {
  readonly #net: SimNetwork;
  readonly node: string;
  readonly opts: LinkOptions;
  readonly alive: () => boolean;
  listening = false;
  conn: SimConnection | undefined;

  constructor(net: SimNetwork, node: string, opts: LinkOptions, alive: () => boolean) {
    super();
    this.#net = net;
    this.node = node;
    this.opts = opts;
    this.alive = alive;
  }

  get dials(): boolean {
    return this.opts.nodeName < this.opts.peerName;
  }

  async start(): Promise<void> {
    this.listening = true;
    this.emit('state', 'WFConnection', 'connecting');
    this.#net.register(this);
  }

  async stop(): Promise<void> {
    this.listening = false;
    this.#net.unregister(this);
  }

  resume(): void {
    if (!this.listening) return;
    this.conn = undefined;
    this.emit('state', 'WFConnection', 'connecting');
    this.#net.tryPair();
  }
}

export class SimNetwork {
  readonly queue: EventQueue;
  readonly #rng: Rng;
  readonly #timing: NetTiming;
  readonly #links = new Map<string, SimLink>();
  up = true;
  /** Bumped at every cut: frames sent on an older path never arrive. */
  pathGeneration = 0;
  #slowUntil = 0;
  #pairing: Timer | undefined;
  /** Connections formed so far. */
  connections = 0;

  constructor(queue: EventQueue, rng: Rng, timing: NetTiming) {
    this.queue = queue;
    this.#rng = rng;
    this.#timing = timing;
  }

  latency(): number {
    const [lo, hi] = this.#timing.latency;
    let d = lo + this.#rng.float() * (hi - lo);
    if (this.queue.now < this.#slowUntil) {
      const [a, b] = this.#timing.spike;
      d += a + this.#rng.float() * (b - a);
    }
    return d;
  }

  private within([lo, hi]: [number, number]): number {
    return lo + this.#rng.float() * (hi - lo);
  }

  transport(node: string, alive: () => boolean): PeerTransport {
    return { link: (opts) => new SimLink(this, node, opts, alive) };
  }

  register(link: SimLink): void {
    const old = this.#links.get(link.node);
    if (old && old !== link) old.conn?.lost('BrokenPipe', 'replaced');
    this.#links.set(link.node, link);
    this.tryPair();
  }

  /** The listener stops (the engine closes its connection itself, as with TCP). */
  unregister(link: SimLink): void {
    if (this.#links.get(link.node) === link) this.#links.delete(link.node);
  }

  /** A process died: its listener is gone and its sockets close (the peer sees a reset soon). */
  processDied(node: string, powerLoss: boolean): void {
    const link = this.#links.get(node);
    if (!link) return;
    this.#links.delete(node);
    const peer = link.conn?.peer;
    link.conn = undefined;
    if (!peer) return;
    if (powerLoss || !this.up)
      this.queue.at(this.within(this.#timing.detect), () =>
        peer.lost('NetworkFailure', 'no data from peer (ping timeout)'),
      );
    else this.queue.at(this.latency(), () => peer.lost('BrokenPipe', 'connection closed by peer'));
  }

  /** Cuts the path: in-flight bytes are lost, each side notices after its ping timeout. */
  cut(): void {
    if (!this.up) return;
    this.up = false;
    this.pathGeneration++;
    for (const link of this.#links.values()) {
      const c = link.conn;
      if (c)
        this.queue.at(
          this.within(this.#timing.detect),
          () => c.lost('NetworkFailure', 'no data from peer (ping timeout)'),
          c.alive,
        );
    }
  }

  heal(): void {
    if (this.up) return;
    this.up = true;
    this.tryPair();
  }

  slow(ms: number): void {
    this.#slowUntil = Math.max(this.#slowUntil, this.queue.now + ms);
  }

  /** Called when a connection end closed: the other end learns it (or, with the path cut, after its ping timeout). */
  closed(c: SimConnection, flush: boolean): void {
    const peer = c.peer;
    if (peer && !peer.isClosed) {
      if (this.up)
        this.queue.at(this.latency() + (flush ? 1 : 0), () => peer.lost('BrokenPipe', 'connection closed by peer'));
      else
        this.queue.at(this.within(this.#timing.detect), () =>
          peer.lost('NetworkFailure', 'no data from peer (ping timeout)'),
        );
    }
    for (const link of this.#links.values()) if (link.conn === c) link.conn = undefined;
  }

  tryPair(): void {
    if (this.#pairing) return;
    this.#pairing = this.queue.at(this.within(this.#timing.connect), () => {
      this.#pairing = undefined;
      const links = [...this.#links.values()];
      if (links.length !== 2 || !this.up) return;
      const [a, b] = links as [SimLink, SimLink];
      if (!a.listening || !b.listening || a.conn || b.conn || !a.alive() || !b.alive()) return;
      if (a.opts.peerName !== b.node || b.opts.peerName !== a.node || a.opts.resource !== b.opts.resource) return;
      const ca = new SimConnection(this, a.node, a.alive, a.opts);
      const cb = new SimConnection(this, b.node, b.alive, b.opts);
      ca.peer = cb;
      cb.peer = ca;
      a.conn = ca;
      b.conn = cb;
      this.connections++;
      const first = this.#rng.chance(0.5) ? [a, b] : [b, a];
      for (const l of first) l.emit('state', 'WFReportParams', 'TCP connected');
      for (const l of first) l.emit('connected', l.conn!);
    });
  }
}
