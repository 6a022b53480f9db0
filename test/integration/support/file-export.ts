// A plain file as an NbdExport, for tests against real NBD clients: reads and writes go
// through one FileHandle; FUA and flush are fdatasync.

import { open, type FileHandle } from 'node:fs/promises';
import type { NbdExport } from '../../../src/nbd/index.ts';

const ZERO_CHUNK = 1024 * 1024;

export class FileExport implements NbdExport {
  readonly size: number;
  readonly readOnly: boolean;
  readonly minBlockSize?: number;
  readonly description?: string;
  readonly #fh: FileHandle;
  /** Counts backend calls, so tests can assert what reached the backend. */
  readonly calls = { read: 0, write: 0, flush: 0, trim: 0, writeZeroes: 0, fua: 0 };

  private constructor(
    fh: FileHandle,
    size: number,
    opts: { readOnly?: boolean; minBlockSize?: number; description?: string },
  ) {
    this.#fh = fh;
    this.size = size;
    this.readOnly = opts.readOnly ?? false;
    if (opts.minBlockSize !== undefined) this.minBlockSize = opts.minBlockSize;
    if (opts.description !== undefined) this.description = opts.description;
  }

  /** Opens (creating and sizing it if `size` is given) a file as an export. */
  static async open(
    path: string,
    opts: { size?: number; readOnly?: boolean; minBlockSize?: number; description?: string } = {},
  ): Promise<FileExport> {
    const fh = await open(path, opts.readOnly ? 'r' : opts.size !== undefined ? 'w+' : 'r+');
    if (opts.size !== undefined) await fh.truncate(opts.size);
    const { size } = await fh.stat();
    return new FileExport(fh, size, opts);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.calls.read++;
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.#fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) {
        buf.fill(0, done); // past the end of a sparse file
        break;
      }
      done += bytesRead;
    }
    return buf;
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.calls.write++;
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.#fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    if (fua) await this.#fua();
  }

  async flush(): Promise<void> {
    this.calls.flush++;
    await this.#fh.datasync();
  }

  async trim(_offset: number, _length: number, fua: boolean): Promise<void> {
    // proto.md "NBD_CMD_TRIM": a server "MAY discard ... but is not required to".
    this.calls.trim++;
    if (fua) await this.#fua();
  }

  async writeZeroes(offset: number, length: number, flags: { fua: boolean; noHole: boolean }): Promise<void> {
    this.calls.writeZeroes++;
    const zeroes = Buffer.alloc(Math.min(length, ZERO_CHUNK));
    for (let at = 0; at < length; at += zeroes.length) {
      const n = Math.min(zeroes.length, length - at);
      await this.#fh.write(zeroes, 0, n, offset + at);
    }
    if (flags.fua) await this.#fua();
  }

  async close(): Promise<void> {
    await this.#fh.close();
  }

  async #fua(): Promise<void> {
    this.calls.fua++;
    await this.#fh.datasync();
  }
}
