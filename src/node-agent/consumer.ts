// The consumer seam until the CSI driver exists: on the Primary, the volume's
// NBD export becomes a filesystem mounted at spec.mountPath, as the tutorial
// mounts /dev/drbd0 on /mydata/mysql. Without the kernel's nbd driver (these
// build machines, containers) the block device is FUSE + loop:
//
//   nbdfuse RUN/RES.fuse/disk --unix RUN/RES.nbd      (a file backed by the export)
//   losetup -f --show RUN/RES.fuse/disk               (→ /dev/loopN)
//   mkfs.xfs /dev/loopN                               (only when the device is blank)
//   mount /dev/loopN /mydata/mysql
//
// release() undoes it in reverse order, so the Primary can be demoted. Every
// step looks at the world first (mount table, losetup -j), so a restarted agent
// picks up where the last one was. "Never over existing data": mkfs runs only
// when blkid finds no signature and the first MiB is zeros.
import { execFile, spawn } from 'node:child_process';
import { mkdir, open, readFile, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

export type Run = (cmd: string, args: readonly string[], timeoutMs?: number) => Promise<{ code: number; stdout: string; stderr: string }>;

export const run: Run = (cmd, args, timeoutMs = 120_000) => new Promise((resolve) => {
  execFile(cmd, [...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
    const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
    resolve({ code, stdout, stderr: stderr || (err && code === 1 ? err.message : '') });
  });
});

export class ConsumerError extends Error {
  readonly code = 'TANDEM_ERR_CONSUMER';
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'ConsumerError';
    this.reason = reason;
  }
}

/** Mount points of this mount namespace (the agent runs in the node's). */
async function mountPoints(): Promise<Map<string, string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (f[4] && sep > 0) out.set(f[4].replace(/\\040/g, ' '), f[sep + 2] ?? '');
  }
  return out;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

async function isZero(device: string, bytes: number): Promise<boolean> {
  const h = await open(device, 'r');
  try {
    const b = Buffer.alloc(bytes);
    const { bytesRead } = await h.read(b, 0, bytes, 0);
    return b.subarray(0, bytesRead).every((x) => x === 0);
  } finally {
    await h.close();
  }
}

export class Consumer {
  readonly #runDir: string;
  readonly #run: Run;
  /** Where the host's / is in this mount namespace: '' on the host, /mnt/tandem-host in the chart's pod. */
  readonly #hostRoot: string;

  constructor(o: { runDir: string; hostRoot?: string; run?: Run }) {
    this.#runDir = o.runDir;
    this.#hostRoot = (o.hostRoot ?? '').replace(/\/+$/, '');
    this.#run = o.run ?? run;
  }

  #onHost(path: string): string {
    return this.#hostRoot + path;
  }

  #paths(resource: string) {
    const dir = join(this.#runDir, `${resource}.fuse`);
    return { dir, file: join(dir, 'disk'), nbd: join(this.#runDir, `${resource}.nbd`) };
  }

  async #loopOf(file: string): Promise<string | undefined> {
    const r = await this.#run('losetup', ['-j', file, '-O', 'NAME', '-n']);
    return r.stdout.split('\n').map((s) => s.trim()).find(Boolean);
  }

  /** Makes the filesystem (once) and mounts it; returns what is mounted where. */
  async ensure(resource: string, filesystem: 'xfs' | 'ext4', hostMountPath: string): Promise<{ device: string; created: boolean }> {
    const p = this.#paths(resource);
    const mountPath = this.#onHost(hostMountPath);
    const mounts = await mountPoints();
    if (!mounts.has(p.dir)) {
      await mkdir(p.dir, { recursive: true });
      const child = spawn('nbdfuse', [p.file, '--unix', p.nbd], { detached: true, stdio: 'ignore' });
      child.unref();
      for (let i = 0; i < 100 && !(await mountPoints()).has(p.dir); i++) await new Promise((r) => setTimeout(r, 50));
      if (!(await mountPoints()).has(p.dir)) throw new ConsumerError('NbdfuseFailed', `nbdfuse did not mount ${p.dir} (is the engine Primary?)`);
    }
    let loop = await this.#loopOf(p.file);
    if (!loop) {
      const r = await this.#run('losetup', ['-f', '--show', '--direct-io=off', p.file]);
      if (r.code !== 0) throw new ConsumerError('LoopFailed', `losetup ${p.file}: ${r.stderr.trim()}`);
      loop = r.stdout.trim();
    }
    let created = false;
    if (mounts.get(mountPath) === undefined) {
      const probe = await this.#run('blkid', ['-p', '-o', 'value', '-s', 'TYPE', loop]);
      // blkid -p: exit 2 = no signature found.
      if (probe.code === 2) {
        if (!(await isZero(loop, 1 << 20))) throw new ConsumerError('UnknownData', `${loop} has no filesystem signature but is not blank; refusing to mkfs over data`);
        const mk = await this.#run(`mkfs.${filesystem}`, filesystem === 'ext4' ? ['-q', '-F', loop] : ['-q', loop], 600_000);
        if (mk.code !== 0) throw new ConsumerError('MkfsFailed', `mkfs.${filesystem} ${loop}: ${mk.stderr.trim()}`);
        created = true;
      } else if (probe.code !== 0) {
        throw new ConsumerError('ProbeFailed', `blkid ${loop}: ${probe.stderr.trim()}`);
      }
      await mkdir(mountPath, { recursive: true });
      const m = await this.#run('mount', [loop, mountPath]);
      if (m.code !== 0) throw new ConsumerError('MountFailed', `mount ${loop} ${mountPath}: ${m.stderr.trim()}`);
    }
    return { device: loop, created };
  }

  /** Unmounts, detaches the loop device and stops nbdfuse; safe when nothing is set up. */
  async release(resource: string, hostMountPath: string | undefined): Promise<void> {
    const p = this.#paths(resource);
    const mountPath = hostMountPath && this.#onHost(hostMountPath);
    const mounts = await mountPoints();
    if (mountPath && mounts.has(mountPath)) {
      const u = await this.#run('umount', [mountPath]);
      if (u.code !== 0) throw new ConsumerError('UnmountFailed', `umount ${mountPath}: ${u.stderr.trim()} (is the volume still in use?)`);
    }
    if (mounts.has(p.dir)) {
      const loop = await this.#loopOf(p.file);
      if (loop) await this.#run('losetup', ['-d', loop]);
      // Unmounting the FUSE file system ends nbdfuse, which closes the NBD connection.
      // The loop device lets go of the file asynchronously: retry while it is busy.
      let u = await this.#run('umount', [p.dir]);
      for (let i = 0; u.code !== 0 && i < 40; i++) {
        await new Promise((r) => setTimeout(r, 100));
        u = await this.#run('umount', [p.dir]);
      }
      if (u.code !== 0) throw new ConsumerError('UnmountFailed', `umount ${p.dir}: ${u.stderr.trim()}`);
    }
    await rmdir(p.dir).catch(() => undefined);
  }

  async mounted(hostMountPath: string | undefined): Promise<boolean> {
    return hostMountPath !== undefined && (await mountPoints()).has(this.#onHost(hostMountPath));
  }

  static exists = exists;
}
