// The local backing store: a regular file or a block device, opened once.
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import { ERROR_CODES, TandemError } from './errors.ts';

export interface Backing {
  readonly path: string;
  readonly handle: FileHandle;
  /** Capacity in bytes. */
  readonly size: number;
  readonly isBlockDevice: boolean;
}

/** glibc's encoding of dev_t. */
function majorMinor(rdev: number): [number, number] {
  const r = BigInt(rdev);
  const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn));
  const minor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
  return [major, minor];
}

export async function sizeOf(path: string): Promise<{ size: number; isBlockDevice: boolean }> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    throw new TandemError(ERROR_CODES.backing, `${path}: cannot open backing device: ${(err as Error).message}`, 10, { cause: err });
  }
  if (st.isBlockDevice()) {
    const [maj, min] = majorMinor(st.rdev);
    const sectors = Number((await readFile(`/sys/dev/block/${maj}:${min}/size`, 'utf8')).trim());
    return { size: sectors * 512, isBlockDevice: true };
  }
  if (st.isFile()) return { size: st.size, isBlockDevice: false };
  throw new TandemError(ERROR_CODES.backing, `${path}: not a block device or regular file`);
}

export async function openBacking(path: string): Promise<Backing> {
  const { size, isBlockDevice } = await sizeOf(path);
  let handle: FileHandle;
  try {
    handle = await open(path, fsc.O_RDWR);
  } catch (err) {
    throw new TandemError(ERROR_CODES.backing, `${path}: cannot open backing device: ${(err as Error).message}`, 10, { cause: err });
  }
  return { path, handle, size, isBlockDevice };
}

/** Reads exactly `length` bytes (short reads past EOF of a sparse file return zeroes). */
export async function readExact(h: FileHandle, offset: number, length: number, into?: Buffer): Promise<Buffer> {
  const buf = into ?? Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await h.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) { buf.fill(0, done, length); break; }
    done += bytesRead;
  }
  return buf;
}

export async function writeExact(h: FileHandle, offset: number, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const { bytesWritten } = await h.write(data, done, data.byteLength - done, offset + done);
    if (bytesWritten === 0) throw new TandemError(ERROR_CODES.io, `short write at ${offset + done}`);
    done += bytesWritten;
  }
}
