// The peer link: one authenticated TCP connection to the other node.
//
// Who dials: the node whose `address` sorts lower dials, the other listens, so
// exactly one connection forms without a tie-break. Both ends then run the same
// handshake before any replication frame is accepted:
//   1. HELLO both ways: resource name, node names, protocol version range,
//      a 32-byte random nonce, and whether a shared secret is configured.
//      Wrong resource, wrong node, no common version → ERROR + close.
//   2. AUTH both ways when `shared-secret` is set (DRBD's cram-hmac-alg):
//      HMAC(secret, peer's nonce | resource | own node name). A wrong answer
//      closes the link; nothing the peer sent reaches the engine, let alone a disk.
//   3. The engine takes over the Connection (PARAMS, bitmaps, data).
// Failures are retried with backoff up to connect-int, so a wrong or hostile
// peer can neither stop the real one from connecting nor touch data.
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { createHmac, getHashes, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { adoptWithOnread } from '../net/onread-socket.ts';
import {
  FrameParser,
  HEADER_BYTES,
  P,
  PROTOCOL_VERSION_MAX,
  PROTOCOL_VERSION_MIN,
  encodeFrame,
  encodeJson,
  type Frame,
} from './wire.ts';
import type { ConnectionState } from './states.ts';
import type { LinkEvents, LinkOptions, PeerConnection, PeerLinkHandle, PeerTransport } from './world.ts';

const Hello = z.object({
  proto: z.literal('tandem'),
  protoMin: z.number().int(),
  protoMax: z.number().int(),
  resource: z.string(),
  node: z.string(),
  peer: z.string(),
  nonce: z.string().regex(/^[A-Za-z0-9+/=]{40,48}$/),
  auth: z.string().nullable(),
});
type Hello = z.infer<typeof Hello>;

export type FrameHandler = (frame: Frame) => void;

/** Where a link socket's reads go: the handshake first, then the established Connection. */
interface LinkReader {
  parser: FrameParser | undefined;
  /** Bytes read into the staging buffer (transient: reused by the next read of any link socket). */
  onChunk: ((chunk: Buffer, transient: boolean) => void) | undefined;
  /** Bytes read straight into parser.directTarget(). */
  onDirect: ((n: number) => void) | undefined;
}

/** Every link socket reads into this buffer, which is emptied before the next read. */
const STAGING = Buffer.allocUnsafeSlow(256 * 1024);
/** A frame header's worth, read into when a header is expected alone (FrameParser.expectsHeader). */
const HEADER_STAGING = Buffer.allocUnsafeSlow(HEADER_BYTES);
/** A payload with at least this much left to receive is read into directly. */
const DIRECT_READ_MIN = 32 * 1024;

/**
 * onread options for a link socket (see src/net/onread-socket.ts): a large DATA or RS_DATA
 * payload is read by the kernel straight into its final buffer; the header after a large frame
 * alone into HEADER_STAGING (so that its payload is read directly too); everything else into STAGING.
 */
function linkOnread(reader: LinkReader): net.OnReadOpts {
  return {
    buffer: () => {
      const direct = reader.parser?.directTarget();
      if (direct !== undefined && direct.length >= DIRECT_READ_MIN) return direct;
      return reader.parser?.expectsHeader() === true ? HEADER_STAGING : STAGING;
    },
    callback: (n, buf) => {
      if (buf === STAGING || buf === HEADER_STAGING) reader.onChunk?.((buf as Buffer).subarray(0, n), true);
      else reader.onDirect?.(n);
      return true;
    },
  };
}

/**
 * An established, authenticated connection. Sends are batched with cork/uncork
 * so that a burst of acks or small frames costs one syscall.
 */
export class Connection implements PeerConnection {
  readonly socket: net.Socket;
  readonly parser: FrameParser;
  readonly protocolVersion: number;
  private handler: FrameHandler | undefined;
  private backlog: Frame[] = [];
  private closed = false;
  private corked = false;
  private lastRx = Date.now();
  private lastTx = Date.now();
  private pingTimer: NodeJS.Timeout | undefined;
  bytesSent = 0;
  bytesReceived = 0;
  onClose: ((state: ConnectionState, reason: string) => void) | undefined;

  constructor(
    socket: net.Socket,
    parser: FrameParser,
    version: number,
    opts: { pingIntMs: number; pingTimeoutMs: number },
  ) {
    this.socket = socket;
    this.parser = parser;
    this.protocolVersion = version;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      this.close(err.code === 'EPIPE' || err.code === 'ECONNRESET' ? 'BrokenPipe' : 'NetworkFailure', err.message),
    );
    socket.on('close', () => this.close('BrokenPipe', 'connection closed by peer'));
    const tick = Math.max(50, Math.min(opts.pingIntMs, 1000) / 2);
    this.pingTimer = setInterval(() => {
      const now = Date.now();
      if (now - this.lastRx > opts.pingIntMs + opts.pingTimeoutMs)
        this.close('NetworkFailure', `no data from peer for ${now - this.lastRx} ms (ping-int + ping-timeout)`);
      else if (now - this.lastTx >= opts.pingIntMs / 2) this.send(encodeFrame(P.PING));
    }, tick);
    this.pingTimer.unref();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Installs the frame handler and replays frames that arrived with the handshake. */
  setHandler(h: FrameHandler): void {
    this.handler = h;
    const pending = this.backlog;
    this.backlog = [];
    for (const f of pending) if (!this.closed) this.dispatch(f);
  }

  /** A frame that was parsed before this connection owned the socket. */
  deliver(f: Frame): void {
    if (this.closed) return;
    if (this.handler) this.dispatch(f);
    else this.backlog.push(f);
  }

  /** Bytes from the socket; `transient`: the caller reuses the chunk's memory once this returns. */
  onData(chunk: Buffer, transient = false): void {
    this.handleParsed(chunk.length, this.parser.feed(chunk, transient));
  }

  /** `n` bytes were read straight into the parser's directTarget(). */
  onDirect(n: number): void {
    this.handleParsed(n, this.parser.directFilled(n));
  }

  private handleParsed(n: number, r: ReturnType<FrameParser['feed']>): void {
    this.lastRx = Date.now();
    this.bytesReceived += n;
    for (const f of r.frames) {
      if (this.closed) return;
      if (this.handler) this.dispatch(f);
      else this.backlog.push(f);
    }
    if (r.error) this.close('ProtocolError', r.error);
  }

  private dispatch(f: Frame): void {
    if (f.type === P.PING) {
      this.send(encodeFrame(P.PING_ACK));
      return;
    }
    if (f.type === P.PING_ACK) return;
    this.handler!(f);
  }

  /** Queues buffers for sending; `onSent` runs when they reached the kernel (protocol A's ack point). */
  send(bufs: Buffer[], onSent?: () => void): boolean {
    if (this.closed) return false;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    for (let i = 0; i < bufs.length; i++) {
      const b = bufs[i]!;
      this.bytesSent += b.length;
      if (i === bufs.length - 1 && onSent) this.socket.write(b, () => onSent());
      else this.socket.write(b);
    }
    this.lastTx = Date.now();
    return true;
  }

  sendJson(type: Parameters<typeof encodeJson>[0], value: unknown): boolean {
    return this.send(encodeJson(type, value));
  }

  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  whenQueuedBelow(bytes: number): Promise<void> {
    if (this.closed || this.socket.writableLength <= bytes) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (!this.closed && this.socket.writableLength > bytes) return;
        this.socket.off('drain', check);
        this.socket.off('close', check);
        resolve();
      };
      this.socket.on('drain', check);
      this.socket.on('close', check);
    });
  }

  pauseReading(): void {
    this.socket.pause();
  }

  resumeReading(): void {
    this.socket.resume();
  }

  /**
   * Ends the connection. `flush`: our own decision (split brain, a refusal), so
   * what we queued (our PARAMS, the ERROR saying why) still reaches the peer;
   * otherwise (the link failed) the socket is dropped at once.
   */
  close(state: ConnectionState, reason: string, flush = false): void {
    if (this.closed) return;
    this.closed = true;
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (flush) {
      if (this.corked) {
        this.corked = false;
        this.socket.uncork();
      }
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else {
      this.socket.destroy();
    }
    this.onClose?.(state, reason);
  }
}

export class PeerLink extends EventEmitter<LinkEvents> implements PeerLinkHandle {
  private readonly opts: LinkOptions;
  private server: net.Server | undefined;
  private stopped = true;
  private dialTimer: NodeJS.Timeout | undefined;
  private backoffMs = 100;
  private attempt: net.Socket | undefined;
  private busy = false;
  lastError: string | undefined;

  constructor(opts: LinkOptions) {
    super();
    if (opts.sharedSecret !== undefined && !getHashes().includes(opts.hmacAlg.toLowerCase())) {
      throw new Error(`cram-hmac-alg ${opts.hmacAlg} is not supported by this Node.js (try sha1 or sha256)`);
    }
    this.opts = opts;
  }

  get dials(): boolean {
    return `${this.opts.self.host}:${this.opts.self.port}` < `${this.opts.peer.host}:${this.opts.peer.port}`;
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.busy = false;
    this.emit('state', 'WFConnection', 'connecting');
    if (this.dials) {
      this.scheduleDial(0);
      return;
    }
    // pauseOnConnect: accept() moves the handle into a socket that reads with onread.
    const server = net.createServer({ pauseOnConnect: true }, (s) => {
      const reader: LinkReader = { parser: undefined, onChunk: undefined, onDirect: undefined };
      this.accept(adoptWithOnread(s, server, linkOnread(reader)), reader);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.opts.self.host, port: this.opts.self.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.opts.logger.error({ err }, 'Peer listener failed'));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.dialTimer) clearTimeout(this.dialTimer);
    this.attempt?.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  /** Called by the engine when an established connection ended: wait for the next one. */
  resume(): void {
    if (this.stopped) return;
    this.busy = false;
    this.emit('state', 'WFConnection', 'connecting');
    if (this.dials) this.scheduleDial(this.backoffMs);
  }

  private scheduleDial(delay: number): void {
    if (this.stopped) return;
    if (this.dialTimer) clearTimeout(this.dialTimer);
    this.dialTimer = setTimeout(() => this.dial(), delay);
  }

  private dial(): void {
    if (this.stopped || this.busy) return;
    const reader: LinkReader = { parser: undefined, onChunk: undefined, onDirect: undefined };
    const s = net.connect({
      host: this.opts.peer.host,
      port: this.opts.peer.port,
      localAddress: this.opts.self.host,
      onread: linkOnread(reader),
    });
    this.attempt = s;
    // A SYN into a cut link is retransmitted for minutes: give up after a while
    // and dial again, so the pair reconnects within connect-int of the link healing.
    const dialTimeout = Math.max(2000, 2 * this.opts.connectIntMs);
    const timer = setTimeout(() => s.destroy(new Error(`connect timed out after ${dialTimeout} ms`)), dialTimeout);
    s.once('connect', () => {
      clearTimeout(timer);
      this.attempt = undefined;
      this.handshake(s, 'dialed', reader);
    });
    s.once('close', () => clearTimeout(timer));
    s.once('error', (err) => {
      if (this.attempt !== s) return;
      this.attempt = undefined;
      this.lastError = err.message;
      this.retry();
    });
  }

  private retry(): void {
    this.backoffMs = Math.min(this.opts.connectIntMs, this.backoffMs * 2);
    if (this.dials) this.scheduleDial(this.backoffMs);
  }

  private accept(s: net.Socket, reader: LinkReader): void {
    if (this.stopped || this.busy) {
      s.destroy();
      return;
    }
    this.handshake(s, 'accepted', reader);
  }

  private handshake(s: net.Socket, how: 'dialed' | 'accepted', reader: LinkReader): void {
    this.busy = true;
    const o = this.opts;
    const log = o.logger.child({ peer: `${s.remoteAddress}:${s.remotePort}`, how });
    s.setNoDelay(true);
    this.emit('state', 'WFReportParams', `TCP ${how}`);
    const pool = o.payloads;
    const parser = new FrameParser(pool ? { allocPayload: (n) => pool.take(n) } : {});
    const nonce = randomBytes(32);
    const hello: Hello = {
      proto: 'tandem',
      protoMin: PROTOCOL_VERSION_MIN,
      protoMax: PROTOCOL_VERSION_MAX,
      resource: o.resource,
      node: o.nodeName,
      peer: o.peerName,
      nonce: nonce.toString('base64'),
      auth: o.sharedSecret !== undefined ? o.hmacAlg.toLowerCase() : null,
    };
    let peerHello: Hello | undefined;
    let version = 0;
    let authed = false;
    let established: Connection | undefined;
    let announced = false;
    let done = false;
    const fail = (reason: string, tellPeer: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.lastError = reason;
      log.warn({ reason }, 'Refused peer connection');
      if (tellPeer) s.end(Buffer.concat(encodeJson(P.ERROR, { message: reason })));
      setTimeout(() => s.destroy(), 100).unref();
      s.removeAllListeners('data');
      reader.onChunk = undefined;
      reader.onDirect = undefined;
      this.emit('refused', reason);
      this.busy = false;
      this.emit('state', 'WFConnection', reason);
      this.retry();
    };
    const timer = setTimeout(
      () => fail(`handshake timed out after ${o.handshakeTimeoutMs ?? 5000} ms`, true),
      o.handshakeTimeoutMs ?? 5000,
    );
    const proof = (secret: string, n: Buffer, node: string): Buffer =>
      createHmac(o.hmacAlg.toLowerCase(), secret).update(n).update(`|tandem-auth-v1|${o.resource}|${node}`).digest();
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.removeAllListeners('data');
      s.removeAllListeners('error');
      s.removeAllListeners('close');
      this.backoffMs = 100;
      this.lastError = undefined;
      log.info({ version }, 'Handshake complete');
      const conn = new Connection(s, parser, version, { pingIntMs: o.pingIntMs, pingTimeoutMs: o.pingTimeoutMs });
      reader.onChunk = (chunk, transient) => conn.onData(chunk, transient);
      reader.onDirect = (n) => conn.onDirect(n);
      established = conn;
    };
    const onFrame = (f: Frame): void => {
      if (done) {
        established?.deliver(f);
        return;
      }
      if (f.type === P.ERROR) return fail(`peer refused us: ${safeMessage(f.payload)}`, false);
      if (!peerHello) {
        if (f.type !== P.HELLO) return fail(`expected HELLO, got packet type 0x${f.type.toString(16)}`, true);
        const parsed = Hello.safeParse(safeJson(f.payload));
        if (!parsed.success) return fail('malformed HELLO', true);
        const h = parsed.data;
        if (h.resource !== o.resource) return fail(`peer is for resource '${h.resource}', not '${o.resource}'`, true);
        if (h.node !== o.peerName || h.peer !== o.nodeName)
          return fail(
            `peer introduced itself as '${h.node}' (expecting '${o.peerName}'), wanting '${h.peer}' (we are '${o.nodeName}')`,
            true,
          );
        version = Math.min(h.protoMax, PROTOCOL_VERSION_MAX);
        if (version < Math.max(h.protoMin, PROTOCOL_VERSION_MIN))
          return fail(
            `no common protocol version (peer ${h.protoMin}-${h.protoMax}, ours ${PROTOCOL_VERSION_MIN}-${PROTOCOL_VERSION_MAX})`,
            true,
          );
        if ((h.auth === null) !== (hello.auth === null))
          return fail(
            h.auth === null
              ? 'peer has no shared-secret but we require authentication'
              : 'peer requires authentication but we have no shared-secret',
            true,
          );
        if (h.auth !== null && h.auth !== hello.auth)
          return fail(`cram-hmac-alg differs: peer ${h.auth}, ours ${hello.auth}`, true);
        peerHello = h;
        if (o.sharedSecret === undefined) return finish();
        s.write(Buffer.concat(encodeFrame(P.AUTH, proof(o.sharedSecret, Buffer.from(h.nonce, 'base64'), o.nodeName))));
        return;
      }
      if (!authed) {
        if (f.type !== P.AUTH) return fail(`expected AUTH, got packet type 0x${f.type.toString(16)}`, true);
        const expected = proof(o.sharedSecret!, nonce, peerHello.node);
        if (f.payload.length !== expected.length || !timingSafeEqual(f.payload, expected))
          return fail('Authentication of peer failed', true);
        authed = true;
        return finish();
      }
    };
    const onParsed = (r: ReturnType<FrameParser['feed']>): void => {
      for (const f of r.frames) onFrame(f);
      if (r.error && !done) fail(`protocol error during handshake: ${r.error}`, true);
      else if (r.error) established?.close('ProtocolError', r.error);
      // Announce only after the whole chunk went through, so frames that came
      // with the last handshake frame are already in the connection's backlog.
      if (established && !announced) {
        announced = true;
        this.emit('connected', established);
      }
    };
    reader.parser = parser;
    reader.onChunk = (chunk, transient) => onParsed(parser.feed(chunk, transient));
    reader.onDirect = (n) => onParsed(parser.directFilled(n));
    s.on('data', (chunk: Buffer) => onParsed(parser.feed(chunk)));
    s.on('error', (err) => fail(`connection error during handshake: ${err.message}`, false));
    s.on('close', () => fail('peer closed the connection during handshake', false));
    s.write(Buffer.concat(encodeJson(P.HELLO, hello)));
  }
}

function safeJson(b: Buffer): unknown {
  try {
    return JSON.parse(b.toString('utf8'));
  } catch {
    return undefined;
  }
}

function safeMessage(b: Buffer): string {
  const j = safeJson(b) as { message?: unknown } | undefined;
  return typeof j?.message === 'string' ? j.message.slice(0, 200) : 'unknown reason';
}

/** The real peer transport: TCP with the handshake above. */
export const tcpTransport: PeerTransport = { link: (opts) => new PeerLink(opts) };
