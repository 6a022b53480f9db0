// The NBD server: a net.Server on a unix socket (the engine's export in its run dir) or on
// TCP, one NbdConnection per client. See connection.ts for the protocol state machine.

import { lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { pino, type Logger } from 'pino';
import { DEFAULT_MAX_OPTION_LENGTH } from './codec.ts';
import { WireSize } from './constants.ts';
import { NbdConnection, type ConnectionContext } from './connection.ts';
import { NbdError, NbdErrorCode } from './errors.ts';
import { adoptWithOnread } from '../net/onread-socket.ts';
import { PayloadPool } from '../net/payload-pool.ts';
import type { NbdServer, StartNbdServerOptions } from './types.ts';

export const DEFAULT_MAX_IN_FLIGHT = 128;
export const DEFAULT_MAX_IN_FLIGHT_BYTES = 128 * 1024 * 1024;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
/** Reply bytes waiting for the kernel above which a connection stops dispatching new requests. */
const MAX_OUTPUT_BUFFERED = 64 * 1024 * 1024;
/** The read buffer shared by all connections of a server: a socket read takes up to this much. */
const STAGING_BYTES = 256 * 1024;
/** Write payload buffers kept for reuse, for all connections of a server. */
const POOLED_PAYLOAD_BYTES = 64 * 1024 * 1024;
/** Options one client may send before it is dropped as a denial of service. */
const MAX_OPTIONS = 64;

export async function startNbdServer(opts: StartNbdServerOptions): Promise<NbdServer> {
  if ((opts.path === undefined) === (opts.port === undefined)) {
    throw new NbdError(
      NbdErrorCode.BAD_SERVER_OPTIONS,
      'startNbdServer needs exactly one of path (unix socket) and port (TCP)',
    );
  }
  const maxInFlight = opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
  const maxInFlightBytes = opts.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES;
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  if (!Number.isInteger(maxInFlight) || maxInFlight < 1)
    throw new NbdError(NbdErrorCode.BAD_SERVER_OPTIONS, `maxInFlight must be a positive integer, got ${maxInFlight}`);
  if (!Number.isInteger(maxInFlightBytes) || maxInFlightBytes < 1)
    throw new NbdError(
      NbdErrorCode.BAD_SERVER_OPTIONS,
      `maxInFlightBytes must be a positive integer, got ${maxInFlightBytes}`,
    );
  if (!Number.isInteger(handshakeTimeoutMs) || handshakeTimeoutMs < 0)
    throw new NbdError(
      NbdErrorCode.BAD_SERVER_OPTIONS,
      `handshakeTimeoutMs must be a non-negative integer, got ${handshakeTimeoutMs}`,
    );

  const log = (opts.logger ?? pino({ enabled: false })).child({ component: 'nbd' });
  const server = new TandemNbdServer(opts, log, {
    lookup: opts.lookup,
    listExports: opts.listExports,
    maxInFlight,
    maxInFlightBytes,
    maxOutputBuffered: MAX_OUTPUT_BUFFERED,
    maxOptions: MAX_OPTIONS,
    maxOptionLength: DEFAULT_MAX_OPTION_LENGTH,
    handshakeTimeoutMs,
    staging: Buffer.allocUnsafeSlow(STAGING_BYTES),
    headerStaging: Buffer.allocUnsafeSlow(WireSize.REQUEST_HEADER),
    payloads: new PayloadPool(POOLED_PAYLOAD_BYTES, opts.allocPayload),
  });
  await server.listen();
  return server;
}

class TandemNbdServer implements NbdServer {
  readonly #opts: StartNbdServerOptions;
  readonly #log: Logger;
  readonly #ctx: ConnectionContext;
  readonly #net: net.Server;
  readonly #connections = new Set<NbdConnection>();
  #nextId = 1;
  #shutdowns = 0;
  #closing: Promise<void> | null = null;

  constructor(opts: StartNbdServerOptions, log: Logger, limits: Omit<ConnectionContext, 'isShuttingDown'>) {
    this.#opts = opts;
    this.#log = log;
    this.#ctx = { ...limits, isShuttingDown: () => this.#shutdowns > 0 || this.#closing !== null };
    // allowHalfOpen: a client that half-closes still gets the replies to what it sent.
    // noDelay: proto.md "If TCP sockets are used, both the client and server SHOULD disable Nagle's algorithm".
    // pauseOnConnect: #accept moves the accepted handle into a socket that reads with `onread`
    // before anything is read.
    this.#net = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) =>
      this.#accept(socket),
    );
    this.#net.on('error', (err) => this.#log.error({ err }, 'NBD listener failed'));
  }

  get clientCount(): number {
    return this.#connections.size;
  }

  address(): string {
    if (this.#opts.path !== undefined) return this.#opts.path;
    const a = this.#net.address();
    if (a === null || typeof a === 'string') return String(a);
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  uri(exportName = ''): string {
    const name = encodeURIComponent(exportName);
    if (this.#opts.path !== undefined) return `nbd+unix:///${name}?socket=${encodeURI(this.#opts.path)}`;
    return `nbd://${this.address()}/${name}`;
  }

  async listen(): Promise<void> {
    if (this.#opts.path !== undefined) {
      const path = this.#opts.path;
      try {
        await this.#listenOnce({ path });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || !(await isStaleSocket(path))) throw err;
        this.#log.info({ path }, 'Removed stale NBD socket');
        await unlink(path);
        await this.#listenOnce({ path });
      }
    } else {
      await this.#listenOnce({ host: this.#opts.host ?? '127.0.0.1', port: this.#opts.port! });
    }
    this.#log.info({ address: this.address() }, 'Listening for NBD clients');
  }

  #listenOnce(options: net.ListenOptions): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.#net.once('error', onError);
      this.#net.listen(options, () => {
        this.#net.off('error', onError);
        resolve();
      });
    });
  }

  #accept(accepted: net.Socket): void {
    const id = this.#nextId++;
    const peer = accepted.remoteAddress === undefined ? 'unix' : `${accepted.remoteAddress}:${accepted.remotePort}`;
    const log = this.#log.child({ conn: id, peer });
    log.debug('Accepted NBD client');
    let conn: NbdConnection | undefined;
    const socket = adoptWithOnread(accepted, this.#net, {
      buffer: () => conn?.readBuffer() ?? this.#ctx.staging,
      callback: (n, buf) => {
        conn?.onRead(n, buf as Buffer);
        return true; // pausing is #pump's business (socket.pause)
      },
    });
    conn = new NbdConnection(socket, this.#ctx, id, log);
    this.#connections.add(conn);
    void conn.settled.then(() => this.#connections.delete(conn));
    if (this.#closing !== null) void conn.shutdown();
  }

  async disconnectAll(): Promise<void> {
    this.#shutdowns++;
    try {
      const conns = [...this.#connections];
      if (conns.length > 0) this.#log.info({ clients: conns.length }, 'Disconnecting NBD clients');
      await Promise.all(conns.map((c) => c.shutdown()));
    } finally {
      this.#shutdowns--;
    }
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.#net.close(() => resolve()));
      await this.disconnectAll();
      await closed;
      this.#log.info({ address: this.address() }, 'Stopped NBD server');
    })();
    return this.#closing;
  }
}

/** A unix socket file nobody listens on any more (its server died without unlinking it). */
async function isStaleSocket(path: string): Promise<boolean> {
  try {
    if (!(await lstat(path)).isSocket()) return false;
  } catch {
    return false;
  }
  return new Promise((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(false);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}
