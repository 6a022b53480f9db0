// A disk with a volatile write cache, as a real drive has one: nbdkit's file plugin
// behind its cache filter in writeback mode, served as a plain file by nbdfuse.
// A write lands in nbdkit's cache; only a flush (the engine's fdatasync, which FUSE
// passes on as NBD_CMD_FLUSH) writes it back to the backing file. `powerCut` kills
// nbdkit with SIGKILL, so whatever was not flushed is gone, as at a power loss.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { processAlive } from '../../../src/cli/process-alive.ts';

const run = promisify(execFile);

export class VolatileDisk {
  readonly dir: string;
  /** The file the engine opens (through FUSE and the cache). */
  readonly path: string;
  /** What is durable: the backing file under the cache. */
  readonly backing: string;
  private fuse: ChildProcess | undefined;

  private constructor(dir: string) {
    this.dir = dir;
    this.path = join(dir, 'fuse', 'disk');
    this.backing = join(dir, 'disk.img');
  }

  static async create(dir: string, bytes: number): Promise<VolatileDisk> {
    await mkdir(join(dir, 'fuse'), { recursive: true });
    const d = new VolatileDisk(dir);
    await writeFile(d.backing, '');
    await truncate(d.backing, bytes);
    await d.powerOn();
    return d;
  }

  private get socket(): string {
    return join(this.dir, 'nbdkit.sock');
  }
  private get pidFile(): string {
    return join(this.dir, 'nbdkit.pid');
  }

  /** Starts nbdkit with an empty cache and mounts it. */
  async powerOn(): Promise<void> {
    await rm(this.pidFile, { force: true });
    await rm(this.socket, { force: true }); // left behind by the SIGKILL
    // nbdkit forks once it listens and writes the pid file: the socket is ready when this returns.
    await run('nbdkit', [
      '--unix',
      this.socket,
      '--pidfile',
      this.pidFile,
      '--filter=cache',
      'file',
      this.backing,
      'cache=writeback',
    ]);
    this.fuse = spawn('nbdfuse', [this.path, '--unix', this.socket], { stdio: 'ignore' });
    for (let i = 0; i < 200 && !existsSync(this.path); i++) await new Promise((r) => setTimeout(r, 25));
    if (!existsSync(this.path)) throw new Error(`nbdfuse did not mount ${this.path}`);
  }

  /** The power goes: the cache dies unflushed, and the mount goes with it. */
  async powerCut(): Promise<void> {
    const pid = Number((await readFile(this.pidFile, 'utf8')).trim());
    process.kill(pid, 'SIGKILL');
    await waitGone(pid);
    const fuse = this.fuse;
    this.fuse = undefined;
    if (fuse?.pid) {
      fuse.kill('SIGKILL');
      await waitGone(fuse.pid);
    }
    await run('fusermount3', ['-u', join(this.dir, 'fuse')]).catch(() =>
      run('umount', ['-l', join(this.dir, 'fuse')]).catch(() => {}),
    );
  }

  /** Bytes of the backing file: what survived. */
  async durableBytes(offset: number, length: number): Promise<Buffer> {
    const h = await open(this.backing, 'r');
    try {
      const b = Buffer.alloc(length);
      await h.read(b, 0, length, offset);
      return b;
    } finally {
      await h.close();
    }
  }

  async destroy(): Promise<void> {
    if (this.fuse) await this.powerCut().catch(() => {});
  }
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (!processAlive(pid)) return; // a zombie has closed everything
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process ${pid} did not exit`);
}
