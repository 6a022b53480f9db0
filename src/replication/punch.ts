// Giving space back: fallocate(2) from Node.js, which has no binding for it.
//
// Why koffi: node:fs has no fallocate, and the `fallocate` CLI costs a fork and an exec
// per request (milliseconds; fstrim and mkfs send thousands). koffi is a maintained FFI
// library (prebuilt for every platform Node runs on, no compiler at install) that calls
// libc's fallocate directly: about 8 µs per call here. It is loaded lazily; where it
// cannot load, or the kernel or filesystem refuses the call (EOPNOTSUPP, a misaligned
// range on a block device …), the range is written with zeroes instead. Either way the
// range reads back as zeroes afterwards, which is all the engine relies on (both nodes
// must hold the same bytes); only the space saving is lost.
//
// Files: FALLOC_FL_PUNCH_HOLE | KEEP_SIZE frees the blocks (a hole reads as zeroes);
// FALLOC_FL_ZERO_RANGE | KEEP_SIZE zeroes and keeps them allocated (NBD_CMD_FLAG_NO_HOLE).
// Both are metadata operations: called synchronously, errno read at once.
// Block devices: the same modes become a discard or a write-zeroes of the device, which
// may take a while: called on a koffi worker thread (errno is then not reliable, so any
// failure falls back to writing zeroes).
import type { FileHandle } from 'node:fs/promises';
import { writeExact } from './backing.ts';

const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;

type Fallocate = ((fd: number, mode: number, offset: number, len: number) => number) & {
  async: (fd: number, mode: number, offset: number, len: number, cb: (err: unknown, res: number) => void) => void;
};

let loaded: Promise<{ fallocate: Fallocate; errno: () => number } | undefined> | undefined;

/** libc's fallocate through koffi, or undefined where that cannot load (then zeroes are written). */
function libc(): Promise<{ fallocate: Fallocate; errno: () => number } | undefined> {
  loaded ??= (async () => {
    try {
      const koffi = (await import('koffi')).default;
      const lib = koffi.load('libc.so.6');
      const fallocate = lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)') as Fallocate;
      return { fallocate, errno: () => koffi.errno() };
    } catch {
      return undefined;
    }
  })();
  return loaded;
}

/** How a zeroRange ended, for counters and tests. */
export type ZeroOutcome = 'punched' | 'zeroed' | 'written';

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/**
 * After this resolves, [offset, offset+length) reads as zeroes (durable only after a
 * datasync, like any write). `punch`: free the space (TRIM, WRITE_ZEROES without NO_HOLE);
 * otherwise keep it allocated.
 */
export async function zeroRange(
  h: FileHandle,
  isBlockDevice: boolean,
  offset: number,
  length: number,
  punch: boolean,
): Promise<ZeroOutcome> {
  if (length === 0) return punch ? 'punched' : 'zeroed';
  const c = await libc();
  const mode = FALLOC_FL_KEEP_SIZE | (punch ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);
  if (c) {
    if (isBlockDevice) {
      const r = await new Promise<number>((resolve) =>
        c.fallocate.async(h.fd, mode, offset, length, (err, res) => resolve(err ? -1 : res)),
      );
      if (r === 0) return punch ? 'punched' : 'zeroed';
    } else if (c.fallocate(h.fd, mode, offset, length) === 0) {
      return punch ? 'punched' : 'zeroed';
    }
  }
  for (let at = 0; at < length; at += ZERO_CHUNK.length)
    await writeExact(h, offset + at, ZERO_CHUNK.subarray(0, Math.min(ZERO_CHUNK.length, length - at)));
  return 'written';
}
