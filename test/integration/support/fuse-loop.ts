// One node's export as a block device on machines without an nbd kernel module: nbdfuse
// exposes the export as a file, losetup makes it /dev/loopN. Needs root, /dev/fuse and loop
// devices (canAttach).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { tool, type NodeName, type Pair } from './pair.ts';

export const canAttach = process.getuid?.() === 0 && existsSync('/dev/fuse') && existsSync('/dev/loop-control');

/** nbdfuse + losetup on one node's export: a block device, and how to take it away again. */
export class FuseLoop {
  readonly dev: string;
  readonly #fuse: ChildProcess;
  readonly #dir: string;
  private constructor(dev: string, fuse: ChildProcess, dir: string) {
    this.dev = dev;
    this.#fuse = fuse;
    this.#dir = dir;
  }

  static async attach(pair: Pair, n: NodeName): Promise<FuseLoop> {
    const dir = join(pair.dir, `fuse-${n}`);
    await mkdir(dir, { recursive: true });
    const pidFile = join(pair.dir, `nbdfuse-${n}.pid`);
    const fuse = spawn('nbdfuse', ['-P', pidFile, join(dir, 'disk'), '--unix', pair.nbdSocket(n)], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    for (let i = 0; i < 200 && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 50));
    if (!existsSync(pidFile)) throw new Error('nbdfuse did not come up');
    const dev = (await tool('losetup', ['-f', '--show', join(dir, 'disk')])).trim();
    return new FuseLoop(dev, fuse, dir);
  }

  /** losetup -d, unmount the FUSE file, wait for nbdfuse to exit (it closes its NBD client). */
  async detach(): Promise<void> {
    await tool('losetup', ['-d', this.dev]);
    const exited = new Promise((r) => this.#fuse.once('exit', r));
    await tool('fusermount3', ['-u', this.#dir]);
    await exited;
  }
}
