// The peer link: one authenticated TCP connection to the other node.
//
// Who dials: the node whose `address` sorts lower dials, the other listens, so
// exactly one connection forms without a tie-break. Each new connection runs the
// handshake of handshake.ts (the peer proves itself before anything names the
// resource or the nodes); then the engine takes over the Connection (PARAMS,
// bitmaps, data).
//
// The listener is open to anyone who can reach its port, so (issue 15):
//   - a connection from an address other than the configured peer's is closed at once,
//     unread (DRBD does the same);
//   - handshakes run concurrently, each with a short deadline, and at most
//     MAX_PENDING at once (the oldest is dropped for a new one): connections that
//     idle or send garbage cannot make the real peer wait behind them;
//   - the first handshake that completes wins, and the others are dropped.
// With `tls yes`, TLS 1.3 with mutual authentication runs first (the listener is the TLS
// server, the dialer the client; both present a certificate from tls-ca, and each checks
// that the other's names the configured peer node), and the handshake above runs inside
// it. A stranger that speaks TLS sees the listener's certificate, which names the node
// (as its address does) but never the volume.
// Failures are retried with backoff up to connect-int, so a wrong or hostile
// peer can neither stop the real one from connecting nor touch data.
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate, getHashes, randomBytes } from 'node:crypto';
import { adoptWithOnread } from '../net/onread-socket.ts';
import { Handshake, NONCE_BYTES } from './handshake.ts';
import { FrameParser, HEADER_BYTES, P, encodeFrame, encodeJson, type Frame } from './wire.ts';
import type { ConnectionState } from './states.ts';
import type pino from 'pino';
import type { LinkEvents, LinkOptions, PeerConnection, PeerLinkHandle, PeerTransport } from './world.ts';

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
  /** afterFlush callbacks: run right after the uncork that hands the queued frames to the socket. */
  private afterUncork: (() => void)[] = [];
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
        // Even on a closed connection: a local write waits in here.
        const after = this.afterUncork;
        this.afterUncork = [];
        for (const fn of after) fn();
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

  afterFlush<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.corked) return fn();
    return new Promise<T>((resolve, reject) => {
      this.afterUncork.push(() => {
        try {
          fn().then(resolve, reject);
        } catch (err) {
          reject(err);
        }
      });
    });
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

/** Handshakes in progress on the listening side, at most. */
export const MAX_PENDING = 64;
/** Default deadline of one handshake (ms): a real peer on a LAN needs a few. */
export const HANDSHAKE_TIMEOUT_MS = 3000;

export class PeerLink extends EventEmitter<LinkEvents> implements PeerLinkHandle {
  private readonly opts: LinkOptions;
  private server: net.Server | undefined;
  private stopped = true;
  private dialTimer: NodeJS.Timeout | undefined;
  private backoffMs = 100;
  private attempt: net.Socket | undefined;
  /** The dialer's attempt is in its handshake. */
  private dialing = false;
  /** A Connection was handed to the engine and has not ended (resume() clears it). */
  private connected = false;
  /** Listening side: handshakes in progress, oldest first, each with its abort. */
  private readonly pending = new Map<net.Socket, (why: string) => void>();
  /** Connections closed unread because they came from another address (reported, rate-limited). */
  strangers = 0;
  private strangersLogged = 0;
  /** With `tls yes`: our certificate, key and CA, loaded by start(). */
  private tlsContext: PeerTls | undefined;
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
    this.tlsContext = this.opts.tls ? loadTls(this.opts.tls) : undefined;
    this.stopped = false;
    this.connected = false;
    this.dialing = false;
    this.emit('state', 'WFConnection', 'connecting');
    if (this.dials) {
      this.scheduleDial(0);
      return;
    }
    // pauseOnConnect: accept() moves the handle into a socket that reads with onread.
    const server = net.createServer({ pauseOnConnect: true }, (s) => this.accept(s, server));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.opts.self.host, port: this.opts.self.port, backlog: 511 }, () => {
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
    for (const abort of [...this.pending.values()]) abort('stopping');
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  /** Called by the engine when an established connection ended: wait for the next one. */
  resume(): void {
    if (this.stopped) return;
    this.connected = false;
    this.dialing = false;
    this.emit('state', 'WFConnection', 'connecting');
    if (this.dials) this.scheduleDial(this.backoffMs);
  }

  private scheduleDial(delay: number): void {
    if (this.stopped) return;
    if (this.dialTimer) clearTimeout(this.dialTimer);
    this.dialTimer = setTimeout(() => this.dial(), delay);
  }

  private dial(): void {
    if (this.stopped || this.dialing || this.connected) return;
    const reader: LinkReader = { parser: undefined, onChunk: undefined, onDirect: undefined };
    const s = net.connect({
      host: this.opts.peer.host,
      port: this.opts.peer.port,
      localAddress: this.opts.self.host,
      // Under TLS the TLS socket reads the handle; onread is for the plain stream only.
      ...(this.tlsContext ? {} : { onread: linkOnread(reader) }),
    });
    this.attempt = s;
    // A SYN into a cut link is retransmitted for minutes: give up after a while
    // and dial again, so the pair reconnects within connect-int of the link healing.
    const dialTimeout = Math.max(2000, 2 * this.opts.connectIntMs);
    const timer = setTimeout(() => s.destroy(new Error(`connect timed out after ${dialTimeout} ms`)), dialTimeout);
    s.once('connect', () => {
      clearTimeout(timer);
      this.attempt = undefined;
      this.dialing = true;
      this.emit('state', 'WFReportParams', 'TCP dialed');
      if (this.tlsContext) this.secure(s, 'dialed', this.tlsContext);
      else this.handshake(s, 'dialed', reader);
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

  private accept(raw: net.Socket, server: net.Server): void {
    if (this.stopped || this.connected) {
      raw.destroy();
      return;
    }
    if (!sameHost(raw.remoteAddress, this.opts.peer.host)) {
      // Not the peer's address: closed unread, and logged at most every 10 s.
      this.strangers++;
      const now = Date.now();
      if (now - this.strangersLogged > 10_000) {
        this.strangersLogged = now;
        this.opts.logger.warn(
          { from: raw.remoteAddress, closed: this.strangers },
          'Closed connections to the peer port from an address that is not the peer',
        );
      }
      raw.destroy();
      return;
    }
    if (this.pending.size >= MAX_PENDING) {
      const [oldest, abort] = this.pending.entries().next().value!;
      this.pending.delete(oldest);
      abort(`more than ${MAX_PENDING} handshakes at once: dropped the oldest`);
    }
    if (this.tlsContext) {
      this.secure(raw, 'accepted', this.tlsContext);
      return;
    }
    const reader: LinkReader = { parser: undefined, onChunk: undefined, onDirect: undefined };
    this.handshake(adoptWithOnread(raw, server, linkOnread(reader)), 'accepted', reader);
  }

  /**
   * TLS 1.3 over a new connection, then the handshake inside it. Both sides verify the
   * other's certificate against tls-ca and that it names the configured peer node; a
   * failure closes the connection with the reason in our log (and lastError).
   */
  private secure(raw: net.Socket, how: 'dialed' | 'accepted', peerTls: PeerTls): void {
    const o = this.opts;
    // Node checks nothing here (rejectUnauthorized: false): checkPeerCertificate does, on
    // both sides, once the TLS handshake is done and before a byte of ours is sent in it.
    const t =
      how === 'accepted'
        ? new tls.TLSSocket(raw, {
            isServer: true,
            secureContext: peerTls.context,
            requestCert: true,
            rejectUnauthorized: false,
          })
        : tls.connect({
            socket: raw,
            secureContext: peerTls.context,
            // An IP address: no SNI, so the ClientHello names nobody.
            host: o.peer.host,
            rejectUnauthorized: false,
            checkServerIdentity: () => undefined,
          });
    let settled = false;
    const timeoutMs = o.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    const settle = (): void => {
      settled = true;
      clearTimeout(timer);
      if (how === 'accepted') this.pending.delete(t);
    };
    const refuse = (reason: string): void => {
      if (settled) return;
      settle();
      t.destroy();
      raw.destroy();
      this.refused(how, reason, o.logger.child({ peer: `${raw.remoteAddress}:${raw.remotePort}`, how }));
    };
    const timer = setTimeout(() => refuse(`TLS handshake timed out after ${timeoutMs} ms`), timeoutMs);
    if (how === 'accepted') this.pending.set(t, (why) => refuse(why));
    t.on('error', (err) => refuse(`TLS handshake failed: ${err.message}`));
    t.on('close', () => refuse('peer closed the connection during the TLS handshake'));
    t.once(how === 'accepted' ? 'secure' : 'secureConnect', () => {
      if (settled) return;
      const problem = checkPeerCertificate(t, peerTls.ca, o.peerName);
      if (problem) return refuse(problem);
      settle();
      t.removeAllListeners('error');
      t.removeAllListeners('close');
      o.logger.info(
        { peer: `${raw.remoteAddress}:${raw.remotePort}`, how, tls: t.getProtocol(), cipher: t.getCipher().name },
        'TLS established',
      );
      const reader: LinkReader = { parser: undefined, onChunk: undefined, onDirect: undefined };
      this.handshake(t, how, reader);
    });
  }

  /** A connection attempt failed before the handshake: the dialer retries; the listener only reports. */
  private refused(how: 'dialed' | 'accepted', reason: string, log: pino.Logger): void {
    this.lastError = reason;
    log.warn({ reason }, 'Refused peer connection');
    this.emit('refused', reason);
    if (how === 'dialed' && !this.stopped) {
      this.dialing = false;
      this.emit('state', 'WFConnection', reason);
      this.retry();
    }
  }

  private handshake(s: net.Socket, how: 'dialed' | 'accepted', reader: LinkReader): void {
    const o = this.opts;
    const log = o.logger.child({ peer: `${s.remoteAddress}:${s.remotePort}`, how });
    s.setNoDelay(true);
    const pool = o.payloads;
    const parser = new FrameParser(pool ? { allocPayload: (n) => pool.take(n) } : {});
    const hs = new Handshake({
      role: how === 'dialed' ? 'dialer' : 'listener',
      resource: o.resource,
      nodeName: o.nodeName,
      peerName: o.peerName,
      auth: o.sharedSecret !== undefined ? { alg: o.hmacAlg.toLowerCase(), secret: o.sharedSecret } : undefined,
      nonce: randomBytes(NONCE_BYTES),
    });
    let established: Connection | undefined;
    let announced = false;
    let done = false;
    const cleanup = (): void => {
      done = true;
      clearTimeout(timer);
      if (how === 'accepted') this.pending.delete(s);
      s.removeAllListeners('data');
      reader.onChunk = undefined;
      reader.onDirect = undefined;
    };
    const fail = (reason: string, tell: string | undefined, proven: boolean): void => {
      if (done) return;
      cleanup();
      if (tell !== undefined) s.end(Buffer.concat(encodeJson(P.ERROR, { message: tell })));
      setTimeout(() => s.destroy(), 100).unref();
      if (how === 'dialed') {
        this.lastError = reason;
        log.warn({ reason }, 'Refused peer connection');
        this.emit('refused', reason);
        this.dialing = false;
        this.emit('state', 'WFConnection', reason);
        this.retry();
        return;
      }
      // The listening side: one of possibly many concurrent attempts; the link's state is
      // untouched. From the peer's address it may be the real peer misconfigured: reported.
      log[proven ? 'warn' : 'info']({ reason }, 'Refused peer connection');
      this.lastError = reason;
      this.emit('refused', reason);
    };
    const timeoutMs = o.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    const timer = setTimeout(() => fail(`handshake timed out after ${timeoutMs} ms`, undefined, hs.proven), timeoutMs);
    if (how === 'accepted') this.pending.set(s, (why) => fail(why, undefined, false));
    const finish = (version: number): void => {
      if (done) return;
      if (this.stopped || this.connected) {
        fail('another connection to the peer was established first', undefined, true);
        return;
      }
      cleanup();
      s.removeAllListeners('error');
      s.removeAllListeners('close');
      this.connected = true;
      this.dialing = false;
      // The winner: every other handshake in progress is a stale or hostile attempt.
      for (const abort of [...this.pending.values()]) abort('the peer connected on another connection');
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
      const step = hs.onFrame(f);
      if (step.kind === 'fail') return fail(step.reason, step.tell, step.proven);
      if (step.frames.length > 0) s.write(Buffer.concat(step.frames));
      if (step.kind === 'done') finish(step.version);
    };
    const onParsed = (r: ReturnType<FrameParser['feed']>): void => {
      for (const f of r.frames) onFrame(f);
      if (r.error && !done) fail(`protocol error during handshake: ${r.error}`, undefined, hs.proven);
      else if (r.error) established?.close('ProtocolError', r.error);
      // Announce only after the whole chunk went through, so frames that came
      // with the last handshake frame are already in the connection's backlog.
      if (established && !announced) {
        announced = true;
        // The dialer reported WFReportParams when its TCP connection stood; the listener has
        // many attempts at once and reports the one that proved to be the peer, so that its
        // engine, like the dialer's (and DRBD's), goes WFConnection → WFReportParams →
        // Connected. Without it every accepted connection was a refused state fact.
        if (how === 'accepted') this.emit('state', 'WFReportParams', 'peer authenticated');
        this.emit('connected', established);
      }
    };
    reader.parser = parser;
    reader.onChunk = (chunk, transient) => onParsed(parser.feed(chunk, transient));
    reader.onDirect = (n) => onParsed(parser.directFilled(n));
    s.on('data', (chunk: Buffer) => onParsed(parser.feed(chunk)));
    s.on('error', (err) => fail(`connection error during handshake: ${err.message}`, undefined, hs.proven));
    s.on('close', () => fail('peer closed the connection during handshake', undefined, hs.proven));
    const first = hs.start();
    if (first.length > 0) s.write(Buffer.concat(first));
  }
}

/** Our side of the peer link's TLS: the context (our certificate and key) and the CA the peer's must come from. */
export interface PeerTls {
  context: tls.SecureContext;
  ca: X509Certificate;
}

/** tls-ca, tls-cert and tls-key as a TLS 1.3 context; a clear error naming the file that is wrong. */
export function loadTls(files: { ca: string; cert: string; key: string }): PeerTls {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`${what} ${path}: ${(err as Error).message}`, { cause: err });
    }
  };
  const ca = read('tls-ca', files.ca);
  const cert = read('tls-cert', files.cert);
  const key = read('tls-key', files.key);
  let caCert: X509Certificate;
  try {
    caCert = new X509Certificate(ca);
  } catch (err) {
    throw new Error(`tls-ca ${files.ca}: not a PEM certificate: ${(err as Error).message}`, { cause: err });
  }
  try {
    return {
      context: tls.createSecureContext({ ca, cert, key, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' }),
      ca: caCert,
    };
  } catch (err) {
    throw new Error(`tls-cert ${files.cert} / tls-key ${files.key}: ${(err as Error).message}`, { cause: err });
  }
}

const oneLine = (dn: string): string => dn.replace(/\n/g, ', ');

/** Names a certificate gives its holder: subject CN and DNS subjectAltNames, each once. */
export function certificateNames(cert: X509Certificate): string[] {
  const names = new Set<string>();
  for (const line of cert.subject.split('\n')) if (line.startsWith('CN=')) names.add(line.slice(3));
  for (const part of (cert.subjectAltName ?? '').split(', ')) if (part.startsWith('DNS:')) names.add(part.slice(4));
  return [...names];
}

/**
 * Why the peer's certificate is not acceptable, or undefined: issued and signed by tls-ca
 * itself (no intermediates), valid now, and naming the peer node.
 */
export function checkPeerCertificate(t: tls.TLSSocket, ca: X509Certificate, peerName: string): string | undefined {
  const cert = t.getPeerX509Certificate();
  if (!cert) return 'peer presented no TLS certificate';
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey))
    return `peer certificate is not signed by tls-ca (${oneLine(ca.subject)}): it was issued by ${oneLine(cert.issuer)}`;
  const now = Date.now();
  if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo))
    return `peer certificate is not valid now (${cert.validFrom} to ${cert.validTo})`;
  const names = certificateNames(cert);
  if (!names.includes(peerName))
    return `peer certificate names ${names.map((n) => `'${n}'`).join(', ') || 'nobody'}, not the peer node '${peerName}'`;
  return undefined;
}

/** Whether a socket's remote address is the configured peer host (IPv4-mapped IPv6 included). */
export function sameHost(remote: string | undefined, configured: string): boolean {
  if (remote === undefined) return false;
  const strip = (a: string): string => (a.toLowerCase().startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);
  const r = strip(remote);
  const c = strip(configured);
  if (!net.isIPv6(r) || !net.isIPv6(c)) return r === c;
  // IPv6 has several spellings of one address: compare them as addresses.
  const list = new net.BlockList();
  list.addAddress(c, 'ipv6');
  return list.check(r, 'ipv6');
}

/** The real peer transport: TCP with the handshake above. */
export const tcpTransport: PeerTransport = { link: (opts) => new PeerLink(opts) };
