// A minimal NBD client over a raw socket, for tests that must send what real clients never
// send (bad magic, reads past the end, unknown options) and observe the exact bytes back.
// Built on the codec's client-side encoders; it is test code, so clarity beats speed.

import net from 'node:net';
import { nbdCodec, nbdWire } from '../../../src/nbd/index.ts';

const { ClientFlag, Opt, Rep, WireSize } = nbdWire;

export interface OptionReply {
  readonly option: number;
  readonly reply: number;
  readonly data: Buffer;
}

export interface SimpleReply {
  readonly error: number;
  readonly handle: bigint;
  readonly data: Buffer;
}

export class RawNbdClient {
  readonly socket: net.Socket;
  /** Resolves when the server closes the connection (or it fails). */
  readonly closed: Promise<void>;
  #buffered: Buffer[] = [];
  #length = 0;
  #ended = false;
  #waiter: (() => void) | null = null;
  #handle = 1n;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      this.#buffered.push(chunk);
      this.#length += chunk.length;
      this.#waiter?.();
    });
    socket.on('end', () => {
      this.#ended = true;
      this.#waiter?.();
    });
    socket.on('error', () => {
      this.#ended = true;
      this.#waiter?.();
    });
  }

  static connect(target: { path: string } | { host: string; port: number }): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(target as net.NetConnectOpts);
      s.once('connect', () => resolve(new RawNbdClient(s)));
      s.once('error', reject);
    });
  }

  /** Connects, checks the greeting, sends client flags and NBD_OPT_GO; returns the option replies. */
  static async open(
    target: { path: string },
    name: string,
    infos: number[] = [],
  ): Promise<{ client: RawNbdClient; replies: OptionReply[] }> {
    const client = await RawNbdClient.connect(target);
    await client.readGreeting();
    client.sendClientFlags(ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE | ClientFlag.NBD_FLAG_C_NO_ZEROES);
    const replies = await client.option(Opt.NBD_OPT_GO, nbdCodec.encodeInfoRequest({ name, infos }));
    return { client, replies };
  }

  /** Bytes already received and not yet read. */
  get pending(): number {
    return this.#length;
  }

  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.#length < n) {
      if (this.#ended) throw new Error(`connection ended with ${this.#length} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.#length})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#waiter = null;
    }
    const all = Buffer.concat(this.#buffered);
    this.#buffered = all.length > n ? [all.subarray(n)] : [];
    this.#length -= n;
    return all.subarray(0, n);
  }

  async readGreeting(): Promise<number> {
    const g = await this.read(WireSize.GREETING);
    if (g.toString('latin1', 0, 16) !== 'NBDMAGICIHAVEOPT') throw new Error(`bad greeting ${g.toString('hex')}`);
    return g.readUInt16BE(16);
  }

  sendClientFlags(flags: number): void {
    this.socket.write(nbdCodec.encodeClientFlags(flags));
  }

  sendOption(option: number, data?: Buffer): void {
    this.socket.write(nbdCodec.encodeOption(option, data));
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = nbdCodec.decodeOptionReplyHeader(await this.read(WireSize.OPTION_REPLY_HEADER));
    if (header === null) throw new Error('bad option reply magic');
    return { option: header.option, reply: header.reply, data: await this.read(header.length) };
  }

  /** Sends an option and reads replies up to the final one (NBD_REP_ACK or an error). */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const replies: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      replies.push(r);
      if (r.reply === Rep.NBD_REP_ACK || r.reply >= 2 ** 31) return replies;
    }
  }

  /** Sends a request; returns its handle. */
  send(req: {
    command: number;
    flags?: number;
    offset?: number;
    length?: number;
    data?: Buffer;
    handle?: bigint;
  }): bigint {
    const handle = req.handle ?? this.#handle++;
    const data = req.data ?? null;
    this.socket.write(
      nbdCodec.encodeRequest({
        command: req.command,
        flags: req.flags ?? 0,
        handle,
        offset: req.offset ?? 0,
        length: req.length ?? data?.length ?? 0,
        data,
      }),
    );
    return handle;
  }

  /** Reads one simple reply; `dataLength(handle)` says how many payload bytes follow a success. */
  async reply(dataLength: (handle: bigint) => number = () => 0, timeoutMs = 5000): Promise<SimpleReply> {
    const header = nbdCodec.decodeSimpleReplyHeader(await this.read(WireSize.SIMPLE_REPLY_HEADER, timeoutMs));
    if (header === null) throw new Error('bad simple reply magic');
    const n = header.error === 0 ? dataLength(header.handle) : 0;
    return { error: header.error, handle: header.handle, data: await this.read(n, timeoutMs) };
  }

  /** Resolves true if the server closes the connection within the timeout. */
  async closedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
    try {
      return await Promise.race([this.closed.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}
