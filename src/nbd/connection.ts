// One NBD client connection, from greeting to close.
//
// Lifecycle of a connection:
//   handshake     the server sends the greeting (NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE|NO_ZEROES),
//                 reads the client flags, then answers options one at a time until
//                 NBD_OPT_GO (after NBD_REP_ACK) or NBD_OPT_EXPORT_NAME opens an export;
//   transmission  requests are parsed, validated and handed to the backend;
//   closing       after NBD_CMD_DISC, client EOF or NBD_OPT_ABORT: in-flight requests finish
//                 and are answered, then the socket is ended. On server shutdown (draining)
//                 requests still arriving are answered NBD_ESHUTDOWN without reaching the
//                 backend until the in-flight ones are done. A broken stream (bad magic, unknown
//                 client flags, too many options, a handshake that never ends) destroys the
//                 socket at once.
// `settled` resolves once the socket is closed AND no backend call is pending, so that a
// caller of disconnectAll() knows no stale write can still land.
//
// Lifecycle of one NBD_CMD_WRITE (the model is DRBD's drbd_req.h):
//   1. bytes arrive; RequestParser frames header + payload (a view of the socket chunk, or
//      one copy into a buffer of the final size). If the connection is saturated
//      (maxInFlight requests or maxInFlightBytes in the backend, or too many reply bytes
//      not yet taken by the kernel) the frame stays in the parser and the socket is paused.
//   2. checkRequest(): command advertised, flags valid, not read-only, within the maximum
//      block size, aligned, inside the export. A failure is answered at once with the NBD
//      error; the payload was consumed, so the stream stays in sync.
//   3. backend.write(offset, data, fua) is called (in arrival order). The write is
//      registered as pending so that a later NBD_CMD_FLUSH can wait for it.
//   4. on completion the write is unregistered (releasing any flush waiting on it), the
//      reply header is queued on the corked socket (replies completed in the same tick
//      leave in one writev), and the parser is pumped again, resuming the socket if it
//      was paused.
// NBD_CMD_FLUSH waits for every write/trim/write-zeroes pending when it arrived, then calls
// backend.flush(): proto.md "Ordering of messages and writes": "All write commands ... that
// the server completes (i.e. replies to) prior to processing a NBD_CMD_FLUSH MUST be written
// to non-volatile storage prior to replying to that NBD_CMD_FLUSH" (waiting for the ones
// still in flight as well is stronger than required, and simple).

import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import {
  decodeNbdString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeNbdString,
  encodeOptionReply,
  encodeRepServer,
  encodeSimpleReply,
  HandshakeParser,
  parseInfoRequest,
  RequestParser,
  type HandshakeFrame,
  type RequestFrame,
} from './codec.ts';
import {
  ClientFlag,
  Cmd,
  CmdFlag,
  cmdName,
  HandshakeFlag,
  Info,
  NbdErr,
  Opt,
  optName,
  Rep,
  type NbdErrno,
  type RepType,
} from './constants.ts';
import { NbdError, NbdErrorCode } from './errors.ts';
import { checkRequest, describeExport, nbdErrnoFor, type ExportCapabilities } from './policy.ts';
import type { PayloadPool } from '../net/payload-pool.ts';
import type { ExportLookup, NbdExport } from './types.ts';

/** A write payload with at least this much left to receive is read into directly. */
const DIRECT_READ_MIN = 32 * 1024;

export interface ConnectionContext {
  /** Every client socket reads into this one buffer (or straight into a payload); see readBuffer(). */
  readonly staging: Buffer;
  /** A request header's worth of memory, read into when a header is expected alone; see readBuffer(). */
  readonly headerStaging: Buffer;
  /** Write payloads are taken from it and given back once the backend has settled the write. */
  readonly payloads: PayloadPool;
  readonly lookup: ExportLookup;
  readonly listExports: (() => string[]) | undefined;
  readonly maxInFlight: number;
  readonly maxInFlightBytes: number;
  /** Reply bytes queued in the socket above which no new request is dispatched. */
  readonly maxOutputBuffered: number;
  /** Options per connection before a hard disconnect. */
  readonly maxOptions: number;
  readonly maxOptionLength: number;
  /** Drop a client still negotiating after this long (0: never). */
  readonly handshakeTimeoutMs: number;
  isShuttingDown(): boolean;
}

type Phase = 'handshake' | 'transmission' | 'closing';

type Opened =
  | { readonly exp: NbdExport; readonly caps: ExportCapabilities }
  | { readonly rep: RepType; readonly message: string };

const REFUSAL_REP = {
  unknown: Rep.NBD_REP_ERR_UNKNOWN,
  policy: Rep.NBD_REP_ERR_POLICY,
  unsup: Rep.NBD_REP_ERR_UNSUP,
} as const satisfies Record<string, RepType>;

/** A write-class request still in the backend; flushes that arrived after it wait on it. */
interface PendingWrite {
  barriers: FlushBarrier[] | null;
}
interface FlushBarrier {
  remaining: number;
  release: () => void;
}

const noop = (): void => {};

export class NbdConnection {
  readonly id: number;
  /** Resolves when the socket is closed and no backend call is pending. */
  readonly settled: Promise<void>;
  #settle: () => void = noop;
  #isSettled = false;

  readonly #socket: Socket;
  readonly #ctx: ConnectionContext;
  readonly #log: Logger;
  #phase: Phase = 'handshake';
  #socketClosed = false;

  readonly #handshake: HandshakeParser;
  #noZeroes = false;
  #options = 0;

  #requests: RequestParser | null = null;
  #export: NbdExport | null = null;
  #caps: ExportCapabilities | null = null;
  #inFlight = 0;
  #inFlightBytes = 0;
  readonly #pendingWrites = new Set<PendingWrite>();
  #paused = false;
  #corked = false;
  /** The client sent NBD_CMD_DISC: dispatch nothing more. */
  #disc = false;
  /** The client half-closed: serve what was received, then close. */
  #eof = false;
  /** disconnectAll(): answer NBD_ESHUTDOWN to what was received, finish in-flight, close. */
  #draining = false;

  constructor(socket: Socket, ctx: ConnectionContext, id: number, log: Logger) {
    this.id = id;
    this.#socket = socket;
    this.#ctx = ctx;
    this.#log = log;
    this.#handshake = new HandshakeParser({ maxOptionLength: ctx.maxOptionLength });
    this.settled = new Promise((resolve) => {
      this.#settle = resolve;
    });

    socket.on('end', () => this.#onEnd());
    socket.on('drain', () => this.#pump());
    socket.on('error', (err) => this.#log.debug({ err }, 'NBD socket failed'));
    if (ctx.handshakeTimeoutMs > 0) {
      socket.setTimeout(ctx.handshakeTimeoutMs);
      socket.once('timeout', () => {
        if (this.#phase === 'handshake') this.#abort('Client did not finish the handshake in time');
      });
    }
    socket.on('close', () => {
      this.#socketClosed = true;
      this.#phase = 'closing';
      this.#log.debug({ inFlight: this.#inFlight }, 'Closed NBD connection');
      this.#maybeSettle();
    });

    // proto.md "Handshake flags": NBD_FLAG_FIXED_NEWSTYLE "MUST be set by servers that support
    // the fixed newstyle protocol"; NBD_FLAG_NO_ZEROES lets the client skip the 124 zeroes.
    socket.write(encodeGreeting(HandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE | HandshakeFlag.NBD_FLAG_NO_ZEROES));
  }

  /**
   * Server shutdown (disconnectAll / close). A connection still negotiating is dropped; an open
   * one answers requests it receives from now on with NBD_ESHUTDOWN, lets in-flight requests
   * finish and be answered, then closes. proto.md "Terminating the transmission phase": "On a
   * server shutdown, the server SHOULD wait for inflight requests to be serviced prior to
   * initiating a hard disconnect ... The error value issued in respect of these requests and
   * any subsequently received requests SHOULD be NBD_ESHUTDOWN."
   */
  shutdown(): Promise<void> {
    if (this.#phase === 'handshake') {
      this.#log.debug('Dropped negotiating NBD client for shutdown');
      this.#destroy();
    } else if (this.#phase === 'transmission' && !this.#draining) {
      this.#draining = true;
      this.#pump();
    }
    return this.settled;
  }

  // -------------------------------------------------------------------------
  // Socket events
  // -------------------------------------------------------------------------

  /**
   * Where the socket's next read lands (server.ts reads every client socket with `onread`):
   * straight into the unfilled rest of a large write payload, so that its bytes are copied
   * once, by the kernel; otherwise into the staging buffer shared by all connections, which
   * {@link onRead} empties before it returns.
   */
  readBuffer(): Buffer {
    if (this.#phase === 'transmission') {
      const direct = this.#requests!.directTarget();
      if (direct !== null && direct.length >= DIRECT_READ_MIN) return direct;
      if (this.#requests!.expectsHeader()) return this.#ctx.headerStaging;
    }
    return this.#ctx.staging;
  }

  /** `n` bytes were read into `buf`, the buffer {@link readBuffer} gave for this read. */
  onRead(n: number, buf: Buffer): void {
    switch (this.#phase) {
      case 'handshake':
        this.#handshake.push(Buffer.from(buf.subarray(0, n)));
        this.#pumpHandshake();
        return;
      case 'transmission': {
        const parser = this.#requests!;
        if (buf === this.#ctx.staging || buf === this.#ctx.headerStaging) parser.push(buf.subarray(0, n), true);
        else parser.directFilled(n);
        this.#pump();
        parser.own(); // the staging buffer is reused by the next read of any connection
        return;
      }
      case 'closing':
        return; // proto.md "NBD_CMD_DISC": "A client MUST NOT send anything to the server after sending an NBD_CMD_DISC"
    }
  }

  #onEnd(): void {
    if (this.#phase === 'handshake') {
      this.#log.debug('NBD client went away during the handshake');
      this.#destroy();
      return;
    }
    this.#eof = true;
    this.#pump();
  }

  // -------------------------------------------------------------------------
  // Handshake
  // -------------------------------------------------------------------------

  #pumpHandshake(): void {
    while (this.#phase === 'handshake') {
      const frame = this.#handshake.next();
      if (frame === null) return;
      this.#onHandshakeFrame(frame);
    }
  }

  #onHandshakeFrame(frame: HandshakeFrame): void {
    switch (frame.type) {
      case 'error':
        this.#abort(frame.message);
        return;
      case 'client-flags': {
        // proto.md "Client flags": "the server MUST drop the TCP connection if the client sets an
        // unknown flag, or a flag that does not match something advertised by the server".
        const known = ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES;
        if ((frame.flags & ~known) !== 0) {
          this.#abort(`Client sent unknown flags 0x${frame.flags.toString(16)}`);
          return;
        }
        this.#noZeroes = (frame.flags & ClientFlag.NBD_FLAG_C_NO_ZEROES) !== 0;
        // Without NBD_FLAG_C_FIXED_NEWSTYLE we still answer options in the fixed format:
        // proto.md "Client flags": "Servers MAY choose to honour fixed newstyle from clients that
        // didn't set this bit".
        return;
      }
      case 'option':
      case 'option-oversized': {
        this.#options++;
        if (this.#options > this.#ctx.maxOptions) {
          // proto.md "Termination of the session during option haggling": "if a server believes a
          // client's behaviour constitutes a denial of service, it MAY initiate a hard disconnect".
          this.#abort(`Client sent more than ${this.#ctx.maxOptions} options`);
          return;
        }
        this.#onOption(frame.option, frame.type === 'option' ? frame.data : null);
        return;
      }
    }
  }

  /** `data` is null when the option data exceeded maxOptionLength (it was skipped). */
  #onOption(option: number, data: Buffer | null): void {
    this.#log.debug({ option: optName(option), length: data?.length }, 'Received NBD option');
    if (option === Opt.NBD_OPT_EXPORT_NAME) {
      this.#onExportName(data);
      return;
    }
    if (option === Opt.NBD_OPT_ABORT) {
      // proto.md "NBD_OPT_ABORT": "The server MUST reply with NBD_REP_ACK" (and SHOULD ignore any data).
      this.#optionReply(option, Rep.NBD_REP_ACK);
      this.#finish();
      return;
    }
    if (this.#ctx.isShuttingDown()) {
      // proto.md: "If the server is in the process of being shut down it ... SHOULD error further
      // options received (other than an NBD_OPT_ABORT) with NBD_REP_ERR_SHUTDOWN."
      this.#optionReply(option, Rep.NBD_REP_ERR_SHUTDOWN, 'Server is shutting down');
      return;
    }
    switch (option) {
      case Opt.NBD_OPT_LIST:
        this.#onList(data);
        return;
      case Opt.NBD_OPT_INFO:
      case Opt.NBD_OPT_GO:
        if (data === null) {
          // proto.md NBD_REP_ERR_TOO_BIG: "The request or the reply is too large to process."
          this.#optionReply(option, Rep.NBD_REP_ERR_TOO_BIG, 'Option data too large');
          return;
        }
        this.#onInfoOrGo(option, data);
        return;
      default:
        // proto.md "Baseline": "Servers that receive messages which they do not implement MUST
        // reply to them with NBD_REP_ERR_UNSUP, and MUST NOT fail to parse the next message".
        // This includes NBD_OPT_STARTTLS (NOTLS mode: "MUST respond with NBD_REP_ERR_POLICY ...
        // [or] NBD_REP_ERR_UNSUP") and NBD_OPT_STRUCTURED_REPLY (simple replies only).
        this.#optionReply(option, Rep.NBD_REP_ERR_UNSUP, `${optName(option)} is not supported`);
    }
  }

  #onExportName(data: Buffer | null): void {
    // proto.md "NBD_OPT_EXPORT_NAME": "If the chosen export does not exist or requirements for the
    // chosen export are not met ..., the server MUST terminate the session." (It cannot carry an error.)
    const name = data === null ? null : decodeNbdString(data);
    if (name === null || !name.ok) {
      this.#abort(`Export name rejected: ${name?.reason ?? 'too long'}`);
      return;
    }
    if (this.#ctx.isShuttingDown()) {
      this.#abort('Refused NBD_OPT_EXPORT_NAME during shutdown');
      return;
    }
    const opened = this.#open(name.value);
    if ('rep' in opened) {
      this.#log.info({ export: name.value, reason: opened.message }, 'Refused export');
      this.#destroy();
      return;
    }
    // proto.md "Newstyle negotiation": size, transmission flags, 124 zeroes unless NBD_FLAG_C_NO_ZEROES.
    this.#socket.write(encodeExportNameReply(opened.exp.size, opened.caps.transmissionFlags, this.#noZeroes));
    this.#enterTransmission(name.value, opened.exp, opened.caps);
  }

  #onList(data: Buffer | null): void {
    const option = Opt.NBD_OPT_LIST;
    // proto.md "NBD_OPT_LIST": "The client MUST NOT send any additional data with the option, and
    // the server SHOULD reject a request that includes data with NBD_REP_ERR_INVALID."
    if (data === null || data.length > 0) {
      this.#optionReply(option, Rep.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
      return;
    }
    if (this.#ctx.listExports === undefined) {
      this.#optionReply(option, Rep.NBD_REP_ERR_POLICY, 'Export listing is disabled');
      return;
    }
    let names: string[];
    try {
      names = this.#ctx.listExports();
    } catch (err) {
      this.#log.error({ err }, 'Failed to list exports');
      this.#optionReply(option, Rep.NBD_REP_ERR_POLICY, 'Export listing failed');
      return;
    }
    // proto.md "NBD_OPT_LIST": "Return zero or more NBD_REP_SERVER replies, one for each export,
    // followed by NBD_REP_ACK".
    for (const name of names) this.#socket.write(encodeOptionReply(option, Rep.NBD_REP_SERVER, encodeRepServer(name)));
    this.#optionReply(option, Rep.NBD_REP_ACK);
  }

  #onInfoOrGo(option: typeof Opt.NBD_OPT_INFO | typeof Opt.NBD_OPT_GO, data: Buffer): void {
    const parsed = parseInfoRequest(data);
    if (!parsed.ok) {
      this.#optionReply(option, Rep.NBD_REP_ERR_INVALID, parsed.reason);
      return;
    }
    const { name, infos } = parsed.value;
    const opened = this.#open(name);
    if ('rep' in opened) {
      // proto.md "NBD_OPT_INFO and NBD_OPT_GO": NBD_REP_ERR_UNKNOWN "The chosen export does not
      // exist"; the refusal message is the error string the client shows.
      this.#log.info({ export: name, option: optName(option), reason: opened.message }, 'Refused export');
      this.#optionReply(option, opened.rep, opened.message);
      return;
    }
    const { exp, caps } = opened;
    const info = (payload: Buffer): void =>
      void this.#socket.write(encodeOptionReply(option, Rep.NBD_REP_INFO, payload));
    // proto.md "NBD_REP_INFO": "The server MUST send an NBD_INFO_EXPORT information type at some
    // point before sending an NBD_REP_ACK".
    info(encodeInfoExport(exp.size, caps.transmissionFlags));
    if (infos.includes(Info.NBD_INFO_NAME)) info(encodeInfoString(Info.NBD_INFO_NAME, name));
    if (infos.includes(Info.NBD_INFO_DESCRIPTION) && exp.description !== undefined)
      info(encodeInfoString(Info.NBD_INFO_DESCRIPTION, exp.description));
    // proto.md "NBD_INFO_BLOCK_SIZE": "The server MUST send this info if it is requested and it
    // intends to enforce block size constraints other than the defaults" (our maximum is 32 MiB,
    // not the default 0xffffffff), and "The server MAY send information requests back which are
    // not explicitly requested": so it is always sent.
    const bs = caps.blockSizes;
    info(encodeInfoBlockSize(bs.minimum, bs.preferred, bs.maximum));
    this.#optionReply(option, Rep.NBD_REP_ACK);
    // proto.md "NBD_OPT_GO": "after a successful reply ... transmission mode is entered immediately",
    // with no zero padding after the NBD_REP_ACK.
    if (option === Opt.NBD_OPT_GO) this.#enterTransmission(name, exp, caps);
  }

  #open(name: string): Opened {
    let found: ReturnType<ExportLookup>;
    try {
      found = this.#ctx.lookup(name);
    } catch (err) {
      this.#log.error({ err, export: name }, 'Export lookup failed');
      return { rep: Rep.NBD_REP_ERR_UNKNOWN, message: 'Export is not available' };
    }
    if ('refuse' in found) return { rep: REFUSAL_REP[found.refuse] ?? Rep.NBD_REP_ERR_UNKNOWN, message: found.message };
    try {
      return { exp: found, caps: describeExport(found) };
    } catch (err) {
      this.#log.error({ err, export: name }, 'Export violates the backend contract');
      return { rep: Rep.NBD_REP_ERR_UNKNOWN, message: 'Export is not available' };
    }
  }

  #optionReply(option: number, rep: RepType, message?: string): void {
    this.#socket.write(encodeOptionReply(option, rep, message === undefined ? undefined : encodeNbdString(message)));
  }

  #enterTransmission(name: string, exp: NbdExport, caps: ExportCapabilities): void {
    this.#phase = 'transmission';
    this.#socket.setTimeout(0); // an open export may idle as long as the client likes
    this.#export = exp;
    this.#caps = caps;
    const pool = this.#ctx.payloads;
    const parser = new RequestParser({ maxPayload: caps.blockSizes.maximum, allocPayload: (n) => pool.take(n) });
    for (const chunk of this.#handshake.takeRemaining()) parser.push(chunk);
    this.#requests = parser;
    this.#log.info(
      { export: name, size: exp.size, readOnly: caps.readOnly, transmissionFlags: caps.transmissionFlags },
      'Opened export',
    );
    this.#pump();
  }

  // -------------------------------------------------------------------------
  // Transmission
  // -------------------------------------------------------------------------

  /** No new request may be taken from the parser now. */
  #saturated(): boolean {
    if (this.#socket.writableLength > this.#ctx.maxOutputBuffered) return true; // the client is not reading its replies
    if (this.#draining) return false; // nothing new goes in flight: requests are answered NBD_ESHUTDOWN
    return (
      this.#inFlight >= this.#ctx.maxInFlight ||
      (this.#inFlight > 0 && this.#inFlightBytes >= this.#ctx.maxInFlightBytes)
    );
  }

  /**
   * Dispatches received requests while the connection has room, then pauses or resumes the
   * socket, and closes once there is nothing left to do. Called on data, on every completion,
   * and on 'drain'.
   */
  #pump(): void {
    if (this.#phase !== 'transmission') return;
    const parser = this.#requests!;
    let exhausted = false;
    while (!this.#disc && !this.#saturated()) {
      const frame = parser.next();
      if (frame === null) {
        exhausted = true;
        break;
      }
      if (frame.type === 'error') {
        // A broken stream is fatal for the connection (proto.md: "Either side MAY initiate a
        // hard disconnect if it detects a violation by the other party of a mandatory condition").
        this.#abort(frame.message);
        return;
      }
      this.#dispatch(frame);
    }
    this.#setPaused(this.#disc || !exhausted);
    if (this.#inFlight === 0 && (this.#disc || this.#draining || (this.#eof && exhausted))) this.#finish();
  }

  #setPaused(paused: boolean): void {
    if (paused === this.#paused) return;
    this.#paused = paused;
    if (paused) this.#socket.pause();
    else this.#socket.resume();
  }

  #dispatch(req: RequestFrame): void {
    if (req.command === Cmd.NBD_CMD_DISC) {
      // proto.md "NBD_CMD_DISC": "The server MUST handle all outstanding requests ... and close
      // the TCP session." There is no reply.
      this.#log.debug({ inFlight: this.#inFlight }, 'Client sent NBD_CMD_DISC');
      this.#disc = true;
      return;
    }
    if (this.#draining) {
      this.#reply(req.handle, NbdErr.NBD_ESHUTDOWN, null);
      return;
    }
    const exp = this.#export!;
    const error = checkRequest(req, this.#caps!, exp.size);
    if (error !== 0) {
      this.#log.debug(
        { command: cmdName(req.command), flags: req.flags, offset: req.offset, length: req.length, error },
        'Rejected NBD request',
      );
      this.#reply(req.handle, error, null);
      return;
    }
    // proto.md: a zero length READ/WRITE/TRIM/WRITE_ZEROES is unspecified but "the server SHOULD
    // NOT disconnect"; there is nothing to do, so it succeeds without reaching the backend.
    if (req.length === 0 && req.command !== Cmd.NBD_CMD_FLUSH) {
      this.#reply(req.handle, 0, null);
      return;
    }

    const fua = (req.flags & CmdFlag.NBD_CMD_FLAG_FUA) !== 0;
    const cost = req.command === Cmd.NBD_CMD_READ || req.command === Cmd.NBD_CMD_WRITE ? req.length : 0;
    let pending: PendingWrite | null = null;
    // biome-ignore lint/suspicious/noConfusingVoidType: a read resolves to its Buffer, every other command to void
    let op: Promise<Buffer | void>;
    try {
      switch (req.command) {
        case Cmd.NBD_CMD_READ:
          op = exp.read(req.offset, req.length);
          break;
        case Cmd.NBD_CMD_WRITE:
          // proto.md "Ordering": with FUA the reply waits until the data is persistent; the
          // backend's write(…, fua=true) resolves only then.
          op = exp.write(req.offset, req.data!, fua);
          pending = this.#addPendingWrite();
          break;
        case Cmd.NBD_CMD_TRIM:
          op = exp.trim!(req.offset, req.length, fua);
          pending = this.#addPendingWrite();
          break;
        case Cmd.NBD_CMD_WRITE_ZEROES:
          op = exp.writeZeroes!(req.offset, req.length, {
            fua,
            noHole: (req.flags & CmdFlag.NBD_CMD_FLAG_NO_HOLE) !== 0,
          });
          pending = this.#addPendingWrite();
          break;
        default: // NBD_CMD_FLUSH (checkRequest admits nothing else)
          op = this.#flushAfterPendingWrites(exp);
      }
    } catch (err) {
      op = Promise.reject(err);
    }
    this.#inFlight++;
    this.#inFlightBytes += cost;
    op.then(
      (result) => this.#complete(req, cost, pending, 0, result, null),
      (err: unknown) => this.#complete(req, cost, pending, nbdErrnoFor(err), undefined, err),
    );
  }

  #complete(
    req: RequestFrame,
    cost: number,
    pending: PendingWrite | null,
    error: NbdErrno,
    // biome-ignore lint/suspicious/noConfusingVoidType: the settled value of `op` above
    result: Buffer | void,
    err: unknown,
  ): void {
    this.#inFlight--;
    this.#inFlightBytes -= cost;
    if (pending !== null) this.#removePendingWrite(pending);
    // NbdExport.write: the payload is the backend's until its promise settles; now it is ours
    // again. Only after a success: a backend that failed may have left a copy of it queued
    // (a mirror frame still on its way), and a buffer nobody reuses is merely collected.
    if (req.data !== null && error === 0) this.#ctx.payloads.give(req.data);
    let data: Buffer | null = null;
    if (error === 0 && req.command === Cmd.NBD_CMD_READ) {
      if (Buffer.isBuffer(result) && result.length === req.length) data = result;
      else {
        // proto.md "NBD_CMD_READ": with simple replies the error must be known before the header
        // is sent, so a short read becomes NBD_EIO here (and no payload).
        err = new NbdError(
          NbdErrorCode.SHORT_READ,
          `backend read returned ${Buffer.isBuffer(result) ? result.length : typeof result} instead of ${req.length} bytes`,
        );
        error = NbdErr.NBD_EIO;
      }
    }
    if (error !== 0 && err !== null) {
      this.#log.warn(
        { err, command: cmdName(req.command), offset: req.offset, length: req.length, error },
        'Backend failed an NBD request',
      );
    }
    this.#reply(req.handle, error, data);
    this.#maybeSettle();
    this.#pump();
  }

  #addPendingWrite(): PendingWrite {
    const p: PendingWrite = { barriers: null };
    this.#pendingWrites.add(p);
    return p;
  }

  #removePendingWrite(p: PendingWrite): void {
    this.#pendingWrites.delete(p);
    if (p.barriers === null) return;
    for (const b of p.barriers) if (--b.remaining === 0) b.release();
  }

  /** Waits for the writes pending now (not later ones), then asks the backend to flush. */
  #flushAfterPendingWrites(exp: NbdExport): Promise<void> {
    if (this.#pendingWrites.size === 0) return exp.flush();
    return new Promise<void>((release) => {
      const barrier: FlushBarrier = { remaining: this.#pendingWrites.size, release };
      for (const p of this.#pendingWrites) {
        p.barriers ??= [];
        p.barriers.push(barrier);
      }
    }).then(() => exp.flush());
  }

  /**
   * Queues a simple reply. proto.md "Transmission": "Replies need not be sent in the same order
   * as requests". Replies queued in the same tick are corked together and leave as one writev.
   */
  #reply(handle: bigint, error: NbdErrno, data: Buffer | null): void {
    const s = this.#socket;
    if (this.#socketClosed || s.destroyed || s.writableEnded) return;
    if (!this.#corked) {
      this.#corked = true;
      s.cork();
      setImmediate(this.#uncork);
    }
    s.write(encodeSimpleReply(error, handle));
    // proto.md "Simple reply message": data follows "if the request is of type NBD_CMD_READ and error is zero".
    if (data !== null && data.length > 0) s.write(data);
  }

  readonly #uncork = (): void => {
    if (!this.#corked) return;
    this.#corked = false;
    this.#socket.uncork();
  };

  // -------------------------------------------------------------------------
  // Ending
  // -------------------------------------------------------------------------

  /** Flushes queued replies, ends the socket, then closes it (a server-side hard disconnect after a clean finish). */
  #finish(): void {
    if (this.#phase === 'closing') return;
    this.#phase = 'closing';
    this.#uncork();
    this.#socket.end(() => this.#socket.destroy());
  }

  /** A broken or hostile stream: drop the connection now. */
  #abort(reason: string): void {
    this.#log.warn({ reason }, 'Dropped NBD connection');
    this.#destroy();
  }

  #destroy(): void {
    this.#phase = 'closing';
    this.#socket.destroy();
  }

  #maybeSettle(): void {
    if (this.#isSettled || !this.#socketClosed || this.#inFlight > 0) return;
    this.#isSettled = true;
    this.#settle();
  }
}
