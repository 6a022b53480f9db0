// The contract between the NBD server and the block device behind it (the
// replication engine, or a file in tests).

import type { Logger } from 'pino';

/**
 * One block device as the NBD server sees it. The server validates every request (bounds,
 * alignment, length, read-only) before calling these methods, and calls them in the order the
 * requests arrived; they may complete in any order.
 *
 * Errors: reject with an Error whose `code` is 'EIO', 'ENOSPC', 'EPERM' … to pick the NBD error
 * sent to the client (anything else is NBD_EIO). The connection keeps serving.
 */
export interface NbdExport {
  /** Size in bytes. Read at every request (bounds) and at open (advertised). */
  readonly size: number;
  readonly readOnly: boolean;
  /**
   * Minimum block size (a power of two ≤ 64 KiB), advertised with NBD_INFO_BLOCK_SIZE; requests
   * not aligned to it get NBD_EINVAL. Default 1. Preferred is max(4096, this); maximum 32 MiB.
   */
  readonly minBlockSize?: number;
  /** Human-readable text for NBD_INFO_DESCRIPTION and NBD_OPT_LIST. */
  readonly description?: string;
  /** Must resolve to exactly `length` bytes. */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * With `fua`, resolve only once the data is on stable storage. `data` is the backend's only
   * until the promise settles: the server reuses the buffer for a later payload, so a backend
   * that keeps the bytes longer (a queue, a cache) must copy them.
   */
  write(offset: number, data: Buffer, fua: boolean): Promise<void>;
  /** Resolve once every write that resolved before this call is on stable storage. */
  flush(): Promise<void>;
  /** Optional: advertised as NBD_FLAG_SEND_TRIM when present. */
  trim?(offset: number, length: number, fua: boolean): Promise<void>;
  /** Optional: advertised as NBD_FLAG_SEND_WRITE_ZEROES when present; must read back as zeroes. */
  writeZeroes?(offset: number, length: number, flags: { fua: boolean; noHole: boolean }): Promise<void>;
}

export type ExportRefusal = {
  /**
   * unknown → NBD_REP_ERR_UNKNOWN, policy → NBD_REP_ERR_POLICY (e.g. the resource is Secondary),
   * unsup → NBD_REP_ERR_UNSUP. Over NBD_OPT_EXPORT_NAME, which cannot carry an error, the
   * connection is dropped instead.
   */
  readonly refuse: 'unknown' | 'policy' | 'unsup';
  /** Sent to the client as the error string (nbdinfo prints it). */
  readonly message: string;
};

/** Resolves an export name (the empty string is the default export). */
export type ExportLookup = (name: string) => NbdExport | ExportRefusal;

export interface StartNbdServerOptions {
  /** Listen on this unix socket path (a stale socket file left by a dead process is replaced). */
  readonly path?: string;
  /** Listen on TCP; host defaults to 127.0.0.1 (NBD has no authentication here). */
  readonly host?: string;
  /** TCP port (0 for an ephemeral one). Exactly one of path and port must be given. */
  readonly port?: number;
  readonly lookup: ExportLookup;
  /** Names for NBD_OPT_LIST; without it listing is refused with NBD_REP_ERR_POLICY. */
  readonly listExports?: () => string[];
  readonly logger?: Logger;
  /** Requests handed to the backend at once per connection before the socket is paused. Default 128. */
  readonly maxInFlight?: number;
  /** Read and write bytes in flight per connection before the socket is paused. Default 128 MiB. */
  readonly maxInFlightBytes?: number;
  /** A client that has not entered transmission after this long is dropped. Default 30 s; 0 disables. */
  readonly handshakeTimeoutMs?: number;
  /**
   * Allocates a new large write payload (later reused from the server's pool). Default
   * Buffer.allocUnsafeSlow; scripts/bench-ceiling.ts gives SharedArrayBuffer memory so that
   * a worker thread can send the payload without a copy.
   */
  readonly allocPayload?: (length: number) => Buffer;
}

export interface NbdServer {
  /** Stops listening, disconnects every client (as disconnectAll), removes the unix socket. */
  close(): Promise<void>;
  /**
   * Stop accepting new opens, wait for in-flight requests, disconnect every client. While it
   * runs, NBD_OPT_GO / NBD_OPT_INFO get NBD_REP_ERR_SHUTDOWN and requests already received get
   * NBD_ESHUTDOWN; once it resolves no backend call from those clients is pending. Opens are
   * accepted again afterwards, so make the lookup refuse first (e.g. on demotion to Secondary).
   */
  disconnectAll(): Promise<void>;
  /** Connections open now (in handshake or transmission). */
  readonly clientCount: number;
  /** The unix socket path, or host:port for TCP. */
  address(): string;
  /** An NBD URI for an export of this server, as nbdinfo/nbdcopy/qemu-img/fio take it. */
  uri(exportName?: string): string;
}
