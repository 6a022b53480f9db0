// Attaching a Primary's NBD export to the kernel as a block device, the way
// `/dev/drbd0` appears under DRBD. Two ways, chosen per resource:
//   nbd   the kernel's nbd driver: `nbd-client -unix SOCK -N RES /dev/nbdN` (only where
//         /sys/module/nbd exists); the device is the configured `device /dev/nbdN`.
//   fuse  where there is no nbd driver (containers, these build machines): nbdfuse exposes
//         the export as a file, `losetup` turns that file into /dev/loopN.
// Configured with `options { attach auto|nbd|fuse|none; }` in the resource (tandem's own
// keyword; DRBD has none). The default is `auto` when `device` names /dev/nbdN and `none`
// otherwise (the export alone, as before). The engine attaches after promotion and
// detaches before demotion and down: a demotion with the device still attached is refused,
// as DRBD refuses to demote an open device.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const ATTACH_METHODS = ['auto', 'nbd', 'fuse', 'none'] as const;
export type AttachSetting = (typeof ATTACH_METHODS)[number];
export type AttachMethod = 'nbd' | 'fuse' | 'none';

export interface AttachChoice {
  readonly method: AttachMethod;
  readonly reason: string;
}

/** What `status --json` reports under `attach`. */
export interface AttachStatus extends AttachChoice {
  /** The block device while attached (/dev/nbd0, /dev/loop3), else null. */
  readonly device: string | null;
  readonly lastError: string | null;
}

const NBD_DEVICE = /^\/dev\/nbd\d+$/;

/** Pure: which way to attach, from the setting, the configured device and the host. */
export function chooseAttach(o: {
  setting: string | undefined;
  device: string | undefined;
  hasNbdModule: boolean;
}): AttachChoice {
  const setting = o.setting ?? (o.device !== undefined && NBD_DEVICE.test(o.device) ? 'auto' : 'none');
  const nbdDevice = o.device !== undefined && NBD_DEVICE.test(o.device);
  switch (setting) {
    case 'none':
      return { method: 'none', reason: 'attach none: the NBD export only' };
    case 'fuse':
      return { method: 'fuse', reason: 'attach fuse: nbdfuse + losetup' };
    case 'nbd':
      if (!nbdDevice)
        return { method: 'none', reason: `attach nbd needs 'device /dev/nbdN', not ${o.device ?? 'none'}` };
      if (!o.hasNbdModule)
        return { method: 'none', reason: 'attach nbd: this kernel has no nbd driver (/sys/module/nbd)' };
      return { method: 'nbd', reason: `attach nbd: nbd-client on ${o.device}` };
    case 'auto':
      if (nbdDevice && o.hasNbdModule)
        return { method: 'nbd', reason: `auto: kernel nbd driver present, nbd-client on ${o.device}` };
      return {
        method: 'fuse',
        reason: `auto: ${nbdDevice ? 'no nbd driver in this kernel' : 'no /dev/nbdN configured'}, nbdfuse + losetup`,
      };
    default:
      return { method: 'none', reason: `unknown attach setting '${setting}' (auto, nbd, fuse, none)` };
  }
}

export function hasNbdModule(): boolean {
  return existsSync('/sys/module/nbd');
}

/** The attachment of one resource's export; attach() and detach() are idempotent. */
export class DeviceAttachment {
  readonly choice: AttachChoice;
  readonly #socket: string;
  readonly #resource: string;
  readonly #configuredDevice: string | undefined;
  readonly #fuseDir: string;
  #device: string | null = null;
  #fuse: ChildProcess | null = null;
  #lastError: string | null = null;

  constructor(o: {
    choice: AttachChoice;
    socket: string;
    resource: string;
    device: string | undefined;
    runDir: string;
  }) {
    this.choice = o.choice;
    this.#socket = o.socket;
    this.#resource = o.resource;
    this.#configuredDevice = o.device;
    this.#fuseDir = join(o.runDir, `${o.resource}.fuse`);
  }

  status(): AttachStatus {
    return { ...this.choice, device: this.#device, lastError: this.#lastError };
  }

  /** attach and detach never overlap (a background detach after a forced demotion may still run). */
  #chain: Promise<unknown> = Promise.resolve();

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#chain.then(fn, fn);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  attach(): Promise<void> {
    return this.#serial(() => this.#attach());
  }

  /**
   * Detaches and attaches again, so the kernel's device shows the export's current size
   * (neither nbd-client nor nbdfuse learns of a new size on a live connection). Refused,
   * and nothing changes, while the device is in use: mounted, or open in any process (a
   * raw block volume is opened, not mounted).
   */
  reattach(): Promise<void> {
    return this.#serial(async () => {
      const device = this.#device;
      if (device !== null) {
        const users = await deviceUsers(device);
        if (users.length > 0) throw new Error(`${device} is in use (${users.join(', ')}); it keeps its size`);
        await this.#detach(false);
      }
      await this.#attach();
    });
  }

  /**
   * Takes the device away; fails (and keeps it) while something holds it open (a
   * mount). `abort`: the engine has already failed the device's I/O (a forced
   * demotion); nbdfuse is killed first so nothing waits on it.
   */
  detach(o: { abort?: boolean } = {}): Promise<void> {
    return this.#serial(() => this.#detach(o.abort === true));
  }

  async #attach(): Promise<void> {
    if (this.#device !== null || this.choice.method === 'none') return;
    try {
      if (this.choice.method === 'nbd') {
        // -N: export name; -t: request timeout (s); -C 1: one connection (tandem does not offer multi-conn).
        await run('nbd-client', [
          '-unix',
          this.#socket,
          '-N',
          this.#resource,
          '-t',
          '30',
          '-C',
          '1',
          this.#configuredDevice!,
        ]);
        this.#device = this.#configuredDevice!;
      } else {
        await mkdir(this.#fuseDir, { recursive: true });
        const file = join(this.#fuseDir, 'disk');
        // Not inside the mount point: looking it up there would wait for nbdfuse, which waits for us.
        const pidFile = `${this.#fuseDir}.nbdfuse.pid`;
        await rm(pidFile, { force: true });
        const fuse = spawn('nbdfuse', ['-P', pidFile, file, '--unix', this.#socket], {
          stdio: 'ignore',
          detached: false,
        });
        this.#fuse = fuse;
        for (let i = 0; i < 200 && !existsSync(pidFile) && running(fuse); i++)
          await new Promise((r) => setTimeout(r, 50));
        if (!existsSync(pidFile)) throw new Error('nbdfuse did not come up');
        this.#device = (await run('losetup', ['-f', '--show', file])).stdout.trim();
      }
      this.#lastError = null;
    } catch (err) {
      this.#lastError = (err as Error).message;
      await this.#detach(true).catch(() => {});
      throw err;
    }
  }

  // Every step is bounded: the control socket must never hang behind a stuck
  // losetup or FUSE unmount (a dead filesystem on top can keep them busy).
  async #detach(abort: boolean): Promise<void> {
    const bounded = { timeout: 10_000, killSignal: 'SIGKILL' as const };
    if (abort && this.#fuse !== null && running(this.#fuse)) this.#fuse.kill('SIGKILL');
    if (this.choice.method === 'nbd') {
      if (this.#device !== null) await run('nbd-client', ['-d', this.#device], bounded);
      this.#device = null;
      return;
    }
    if (this.#device !== null) {
      // losetup -d on a mounted loop device only marks it for autoclear and succeeds: refuse first.
      const mounts = await readFile('/proc/mounts', 'utf8');
      if (mounts.split('\n').some((l) => l.split(' ')[0] === this.#device))
        throw new Error(`${this.#device} is mounted; unmount it first`);
      await run('losetup', ['-d', this.#device], bounded);
      this.#device = null;
    }
    const fuse = this.#fuse;
    if (fuse !== null) {
      // A process killed by a signal has no exit code, only a signal code; its 'exit'
      // has fired already, so waiting for it would cost the whole timeout.
      const exited = !running(fuse) ? Promise.resolve() : new Promise((r) => fuse.once('exit', r));
      await run('fusermount3', ['-u', this.#fuseDir], bounded).catch(() => run('umount', [this.#fuseDir], bounded));
      const gone = await Promise.race([
        exited.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 10_000)),
      ]);
      if (!gone) {
        fuse.kill('SIGKILL');
        await run('umount', ['-l', this.#fuseDir], bounded).catch(() => undefined);
      }
      this.#fuse = null;
    }
  }
}

/** Who holds `device`: where it is mounted, and the processes that have it open. */
export async function deviceUsers(device: string): Promise<string[]> {
  const users: string[] = [];
  for (const line of (await readFile('/proc/mounts', 'utf8')).split('\n')) {
    const f = line.split(' ');
    if (f[0] === device) users.push(`mounted on ${f[1]}`);
  }
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === device) {
        users.push(`open in process ${pid}`);
        break;
      }
    }
  }
  return users;
}

/** Still running: neither exited nor killed by a signal. */
function running(p: ChildProcess): boolean {
  return p.exitCode === null && p.signalCode === null;
}
