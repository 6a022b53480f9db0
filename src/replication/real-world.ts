// The real world of an engine process: the wall clock and Node's timers, files
// and block devices through node:fs (the application's small I/O inline on the
// event loop while the page cache serves it, see BackingIo), the TCP peer link,
// handlers run by /bin/sh, and crypto's random bytes.
import { constants as fsc, readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { BackingIo, sizeOf } from './backing.ts';
import { ERROR_CODES, TandemError } from './errors.ts';
import { runHandler } from './handlers.ts';
import { tcpTransport } from './peer-link.ts';
import { zeroRange } from './punch.ts';
import type { BlockFile, Clock, Storage, Timer, World } from './world.ts';

export const realClock: Clock = {
  now: () => Date.now(),
  after(ms, fn): Timer {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
  every(ms, fn): Timer {
    const t = setInterval(fn, ms);
    t.unref();
    return { cancel: () => clearInterval(t) };
  },
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/** A file or block device opened read-write; `io` is the application's hot path. */
export class FileBlock implements BlockFile {
  readonly path: string;
  readonly handle: FileHandle;
  readonly io: BackingIo;
  readonly isBlockDevice: boolean;

  constructor(path: string, handle: FileHandle, isBlockDevice = false) {
    this.path = path;
    this.handle = handle;
    this.io = new BackingIo(handle);
    this.isBlockDevice = isBlockDevice;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.io.read(offset, length);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.io.write(offset, data);
  }

  async zeroRange(offset: number, length: number, punch: boolean): Promise<void> {
    await zeroRange(this.handle, this.isBlockDevice, offset, length, punch);
  }

  datasync(): Promise<void> {
    return this.handle.datasync();
  }

  truncate(size: number): Promise<void> {
    if (this.isBlockDevice)
      return Promise.reject(
        new TandemError(ERROR_CODES.backing, `${this.path}: a block device cannot be resized here`),
      );
    return this.handle.truncate(size);
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

async function openFile(path: string, flags: number): Promise<FileHandle> {
  try {
    return await open(path, flags, 0o600);
  } catch (err) {
    throw new TandemError(ERROR_CODES.backing, `${path}: cannot open: ${(err as Error).message}`, 10, { cause: err });
  }
}

export const realStorage: Storage = {
  sizeOf,
  async open(path) {
    // A clear error for a missing path, or one that is neither a file nor a block device.
    const { isBlockDevice } = await sizeOf(path);
    return new FileBlock(path, await openFile(path, fsc.O_RDWR), isBlockDevice);
  },
  async create(path, size) {
    const h = await openFile(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC);
    await h.truncate(size);
    return new FileBlock(path, h);
  },
  async mkdirp(path) {
    await mkdir(path, { recursive: true });
  },
  writeText: (path, text) => writeFile(path, text),
  async readText(path) {
    try {
      return await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  },
  async writeTextDurable(path, text) {
    const tmp = `${path}.tmp`;
    const h = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
    try {
      await h.writeFile(text);
      await h.sync();
    } finally {
      await h.close();
    }
    await rename(tmp, path);
    await syncDirectory(dirname(path));
  },
  async removeDurable(path) {
    await rm(path, { force: true });
    await syncDirectory(dirname(path));
  },
};

/** A rename or unlink in `dir` is durable once the directory itself is synced. */
async function syncDirectory(dir: string): Promise<void> {
  const h = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/**
 * The kernel's boot id, read once (it changes only with a reboot). TANDEM_BOOT_ID_FILE
 * points elsewhere: a test that kills a volatile disk cache stands in for a reboot by
 * changing the file (test/integration/power-loss.test.ts).
 */
let bootId: bigint | undefined;
function readBootId(): bigint {
  if (bootId === undefined) {
    const path = process.env.TANDEM_BOOT_ID_FILE ?? '/proc/sys/kernel/random/boot_id';
    let text = '';
    try {
      text = readFileSync(path, 'utf8').trim();
    } catch {
      // Unknown, below.
    }
    // Unknown: a fresh value per process, so every restart after an unclean stop counts
    // as a lost cache (the cautious reading).
    if (text === '') text = randomBytes(16).toString('hex');
    bootId = createHash('sha256').update(text).digest().readBigUInt64LE(0) | 1n;
  }
  return bootId;
}

export const realWorld: World = {
  host: { bootId: readBootId },
  clock: realClock,
  storage: realStorage,
  transport: tcpTransport,
  handlers: { run: runHandler },
  random: { bytes: (n) => randomBytes(n) },
};
