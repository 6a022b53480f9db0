// The consumer seam until the CSI driver exists: on the Primary, the volume's
// block device becomes a filesystem mounted at spec.mountPath, as the tutorial
// mounts /dev/drbd0 on /mydata/mysql. The engine itself attaches its export as
// a kernel block device after promotion (kernel nbd where the node has the
// driver, nbdfuse + losetup otherwise: tandemadm's `attach auto`) and detaches
// it before demotion; this class only does what the tutorial's user does next:
//
//   mkfs.xfs /dev/nbd0              (only when the device is blank)
//   mount /dev/nbd0 /mydata/mysql
//
// release() unmounts, so the engine can detach and demote. Every step looks at the
// world first (the mount table), so a restarted agent picks up where the last one
// was. "Never over existing data": mkfs runs only when blkid finds no signature and
// the first MiB is zeros.
import { execFile } from 'node:child_process';
import { mkdir, open, readFile, stat } from 'node:fs/promises';

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

/** Mount point → source device, in this mount namespace (the agent runs in the node's). */
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
  readonly #run: Run;
  /** Where the host's / is in this mount namespace: '' on the host, /mnt/tandem-host in the chart's pod. */
  readonly #hostRoot: string;

  constructor(o: { hostRoot?: string; run?: Run } = {}) {
    this.#hostRoot = (o.hostRoot ?? '').replace(/\/+$/, '');
    this.#run = o.run ?? run;
  }

  #onHost(path: string): string {
    return this.#hostRoot + path;
  }

  /** Makes the filesystem on `device` (once) and mounts it; says whether it made one. */
  async ensure(device: string, filesystem: 'xfs' | 'ext4', hostMountPath: string): Promise<{ created: boolean }> {
    const mountPath = this.#onHost(hostMountPath);
    const mounted = (await mountPoints()).get(mountPath);
    if (mounted === device) return { created: false };
    if (mounted !== undefined) throw new ConsumerError('MountPathBusy', `${hostMountPath} already has ${mounted} mounted`);
    let created = false;
    const probe = await this.#run('blkid', ['-p', '-o', 'value', '-s', 'TYPE', device]);
    // blkid -p: exit 2 = no signature found.
    if (probe.code === 2) {
      if (!(await isZero(device, 1 << 20))) throw new ConsumerError('UnknownData', `${device} has no filesystem signature but is not blank; refusing to mkfs over data`);
      const mk = await this.#run(`mkfs.${filesystem}`, filesystem === 'ext4' ? ['-q', '-F', device] : ['-q', device], 600_000);
      if (mk.code !== 0) throw new ConsumerError('MkfsFailed', `mkfs.${filesystem} ${device}: ${mk.stderr.trim()}`);
      created = true;
    } else if (probe.code !== 0) {
      throw new ConsumerError('ProbeFailed', `blkid ${device}: ${probe.stderr.trim()}`);
    }
    await mkdir(mountPath, { recursive: true });
    const m = await this.#run('mount', [device, mountPath]);
    if (m.code !== 0) throw new ConsumerError('MountFailed', `mount ${device} ${mountPath}: ${m.stderr.trim()}`);
    return { created };
  }

  /** Unmounts; safe when nothing is mounted. The engine detaches the device itself when it is demoted. */
  async release(hostMountPath: string | undefined, o: { force?: boolean } = {}): Promise<void> {
    if (!hostMountPath) return;
    const mountPath = this.#onHost(hostMountPath);
    if (!(await mountPoints()).has(mountPath)) return;
    const u = await this.#run('umount', [mountPath]);
    // A superseded Primary's device fails every I/O now; whoever still holds files open
    // gets errors, and the mount is detached lazily rather than kept.
    if (u.code !== 0 && o.force) {
      const l = await this.#run('umount', ['-l', mountPath]);
      if (l.code === 0) return;
    }
    if (u.code !== 0) throw new ConsumerError('UnmountFailed', `umount ${hostMountPath}: ${u.stderr.trim()} (is the volume still in use?)`);
  }

  async mounted(hostMountPath: string | undefined): Promise<boolean> {
    return hostMountPath !== undefined && (await mountPoints()).has(this.#onHost(hostMountPath));
  }

  static exists = exists;
}
