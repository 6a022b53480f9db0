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
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, realpath, stat, unlink } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gatherDiskFacts, type PathFacts, removableInPool } from './disk-check.ts';
import type { AdmResult, EngineStatusView } from './engine-client.ts';
import { DEFAULT_MOUNT_ROOT, MountPathError, mountRootFor, prepareMountPoint } from './mount-path.ts';

export type Run = (
  cmd: string,
  args: readonly string[],
  timeoutMs?: number,
) => Promise<{ code: number; stdout: string; stderr: string }>;

export const run: Run = (cmd, args, timeoutMs = 120_000) =>
  new Promise((resolve) => {
    execFile(cmd, [...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : 1
        : 0;
      resolve({ code, stdout, stderr: stderr || (err && code === 1 ? err.message : '') });
    });
  });

/** The source name of the read-only placeholder a node that is not Primary keeps on the mount path. */
export const TOMBSTONE = 'tandem-not-primary';

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
  return stat(p).then(
    () => true,
    () => false,
  );
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

/**
 * `mkfs` on `device` only when it is blank: blkid finds no signature and the first
 * MiB is zeros ("never over existing data"). Shared by spec.mountPath's consumer and
 * the CSI node service's NodeStageVolume.
 */
export async function makeFilesystemOnce(
  run: Run,
  device: string,
  filesystem: 'xfs' | 'ext4',
): Promise<{ created: boolean }> {
  let created = false;
  const probe = await run('blkid', ['-p', '-o', 'value', '-s', 'TYPE', device]);
  // blkid -p: exit 2 = no signature found.
  if (probe.code === 2) {
    if (!(await isZero(device, 1 << 20)))
      throw new ConsumerError(
        'UnknownData',
        `${device} has no filesystem signature but is not blank; refusing to mkfs over data`,
      );
    const mk = await run(`mkfs.${filesystem}`, filesystem === 'ext4' ? ['-q', '-F', device] : ['-q', device], 600_000);
    if (mk.code !== 0) throw new ConsumerError('MkfsFailed', `mkfs.${filesystem} ${device}: ${mk.stderr.trim()}`);
    created = true;
  } else if (probe.code !== 0) {
    throw new ConsumerError('ProbeFailed', `blkid ${device}: ${probe.stderr.trim()}`);
  }
  return { created };
}

/** The command that grows a mounted filesystem to its device: resize2fs takes the device, xfs_growfs the mount point. */
export function growFilesystemCommand(
  fs: string,
  device: string,
  mountPoint: string,
): { cmd: string; args: string[] } | undefined {
  if (fs === 'ext4') return { cmd: 'resize2fs', args: [device] };
  if (fs === 'xfs') return { cmd: 'xfs_growfs', args: [mountPoint] };
  return undefined;
}

/**
 * Grows a mounted filesystem to fill its device, online; a no-op when it fills it already.
 * Returns the error, if any: the filesystem stays mounted and usable at its old size either way.
 */
export async function growFilesystem(
  run: Run,
  device: string,
  filesystem: string,
  mountPath: string,
): Promise<string | undefined> {
  const grow = growFilesystemCommand(filesystem, device, mountPath);
  if (!grow) return `${mountPath} holds ${filesystem}; tandem grows ext4 and xfs`;
  const r = await run(grow.cmd, grow.args, 300_000);
  return r.code === 0 ? undefined : `${grow.cmd} ${grow.args.join(' ')}: ${r.stderr.trim() || `exited ${r.code}`}`;
}

/** The kernel's size of a block device in bytes; ConsumerError BlockdevFailed when blockdev cannot tell. */
export async function blockDeviceBytes(run: Run, device: string): Promise<number> {
  const r = await run('blockdev', ['--getsize64', device]);
  const n = Number(r.stdout.trim());
  if (r.code !== 0 || !Number.isSafeInteger(n))
    throw new ConsumerError('BlockdevFailed', `blockdev --getsize64 ${device}: ${r.stderr.trim() || r.stdout.trim()}`);
  return n;
}

/** The attached kernel device shows fewer bytes than the engine's device has. */
export function needsReattach(deviceBytes: number, engineBytes: number): boolean {
  return deviceBytes < engineBytes;
}

/** What a re-attach needs of the volume's engine on this node (the agent's EngineClient, the CSI node service's EngineView). */
export interface AttachingEngine {
  status(resource: string): Promise<EngineStatusView | undefined>;
  adm(resource: string, ...args: string[]): Promise<AdmResult>;
}

export type GrownDevice = {
  /** The device to mount or stage: the one given, or the one attached again. */
  device: string;
  /** Set when it was attached again: the kernel's size before and after (undefined: unknown) and the volume's. */
  reattached?: { from: number; bytes: number | undefined; volume: number };
};

/**
 * The Primary's kernel device at the volume's size, before anything mounts it. A device
 * attached before the volume grew keeps its old size (neither nbd-client nor a loop
 * device over nbdfuse learns that the export grew), so it is attached again
 * (`tandemadm reattach`), which the engine refuses while the device is open: call this
 * only while nothing of ours has it mounted. Shared by spec.mountPath's consumer (the
 * agent's ensure-consumer) and the CSI node service's NodeStageVolume.
 *
 * `size` reads a device's size: undefined means unknown, and the device is used as it
 * is; an error it throws is the caller's and passes through. After a re-attach this
 * looks until `waitMs` has passed (at least once) for the engine to report a device of
 * the volume's size, and returns the device it has then: `reattached.bytes` below
 * `reattached.volume` means it is still short, which each caller reports its own way.
 * ConsumerError ReattachFailed: tandemadm reattach failed, nothing changed;
 * ReattachedNoDevice: it succeeded but the engine reports no device.
 */
export async function grownDevice(o: {
  engine: AttachingEngine;
  resource: string;
  device: string;
  size: (device: string) => Promise<number | undefined>;
  waitMs: number;
}): Promise<GrownDevice> {
  const from = await o.size(o.device);
  if (from === undefined) return { device: o.device };
  const volume = (await o.engine.status(o.resource))?.size ?? 0;
  if (!needsReattach(from, volume)) return { device: o.device };
  const r = await o.engine.adm(o.resource, 'reattach');
  if (r.code !== 0)
    throw new ConsumerError(
      'ReattachFailed',
      `the kernel device ${o.device} of ${o.resource} has ${from} bytes, the volume ${volume}, and re-attaching it failed: ${(r.stderr || r.stdout).trim()}`,
    );
  const deadline = Date.now() + o.waitMs;
  for (;;) {
    const attach = (await o.engine.status(o.resource))?.attach;
    const device = attach?.device || undefined;
    const bytes = device ? await o.size(device) : undefined;
    const done = device !== undefined && (bytes === undefined || !needsReattach(bytes, volume));
    if (done || Date.now() >= deadline) {
      if (device === undefined)
        throw new ConsumerError(
          'ReattachedNoDevice',
          `${o.resource} was re-attached but its engine reports no device${attach?.lastError ? ` (${attach.lastError})` : ''}`,
        );
      return { device, reattached: { from, bytes, volume } };
    }
    await sleep(250);
  }
}

export class Consumer {
  readonly #run: Run;
  /** Where the host's / is in this mount namespace: '' on the host, /mnt/tandem-host in the chart's pod. */
  readonly #hostRoot: string;
  /** The admin's mount root (mount-path.ts), `{namespace}` for the volume's namespace. */
  readonly #mountRoot: string;

  constructor(o: { hostRoot?: string; run?: Run; mountRoot?: string } = {}) {
    this.#hostRoot = (o.hostRoot ?? '').replace(/\/+$/, '');
    this.#run = o.run ?? run;
    this.#mountRoot = o.mountRoot ?? DEFAULT_MOUNT_ROOT;
  }

  /** The mount point, made (one real directory at a time) under the namespace's mount root. */
  async #mountPoint(hostMountPath: string, namespace: string): Promise<string> {
    const root = mountRootFor(this.#mountRoot, namespace);
    if (root === undefined)
      throw new ConsumerError('MountPathRefused', `mount root ${this.#mountRoot} is not canonical`);
    return prepareMountPoint(this.#hostRoot, root, hostMountPath).catch((err: unknown) => {
      throw err instanceof MountPathError ? new ConsumerError(err.reason, err.message) : err;
    });
  }

  #onHost(path: string): string {
    return this.#hostRoot + path;
  }

  /** Makes the filesystem on `device` (once) and mounts it; says whether it made one. */
  async ensure(
    device: string,
    filesystem: 'xfs' | 'ext4',
    hostMountPath: string,
    namespace = '',
  ): Promise<{ created: boolean; growError?: string }> {
    const mountPath = this.#onHost(hostMountPath);
    const mounted = (await mountPoints()).get(mountPath);
    if (mounted === device) return { created: false };
    // The filesystem goes on top of the placeholder, never in its place: no instant in
    // which the path is the bare directory underneath.
    if (mounted !== undefined && mounted !== TOMBSTONE)
      throw new ConsumerError('MountPathBusy', `${hostMountPath} already has ${mounted} mounted`);
    const { created } = await makeFilesystemOnce(this.#run, device, filesystem);
    await this.#mountPoint(hostMountPath, namespace);
    // nosuid,nodev: the volume's content is the tenant's; nothing on it runs as root
    // or reaches a device (issue 15). nouuid: XFS refuses a second filesystem with the same UUID on one kernel. Both
    // replicas hold the same filesystem; a kernel that still has the old Primary's
    // dead mount (nodes sharing a kernel, as in the test harness) must still mount
    // the new Primary's copy. One kernel never mounts both copies otherwise.
    const options = ['nosuid', 'nodev', ...(filesystem === 'xfs' ? ['nouuid'] : [])].join(',');
    const m = await this.#run('mount', ['-o', options, device, mountPath]);
    if (m.code !== 0) throw new ConsumerError('MountFailed', `mount ${device} ${mountPath}: ${m.stderr.trim()}`);
    // The volume may have grown while it was not mounted here: the filesystem follows.
    const growError = created ? undefined : await growFilesystem(this.#run, device, filesystem, mountPath);
    return { created, ...(growError ? { growError } : {}) };
  }

  /** The kernel's size of a block device in bytes (blockdev), undefined when it cannot be read. */
  deviceBytes(device: string): Promise<number | undefined> {
    return blockDeviceBytes(this.#run, device).catch(() => undefined);
  }

  /**
   * Unmounts; safe when nothing is mounted. The engine detaches the device itself
   * when it is demoted. With `placeholder` (a node that stops being Primary) an
   * empty read-only tmpfs stays (or is put) under it, so an application that
   * reopens a path there gets EROFS/ENOENT instead of writing into the directory
   * underneath and believing its data is on the volume.
   */
  async release(
    hostMountPath: string | undefined,
    o: { placeholder?: boolean; namespace?: string } = {},
  ): Promise<boolean> {
    if (!hostMountPath) return false;
    const mountPath = this.#onHost(hostMountPath);
    let changed = false;
    // The topmost mount first: the filesystem, then (unless it is to stay) the placeholder under it.
    for (
      let source = (await mountPoints()).get(mountPath);
      source !== undefined;
      source = (await mountPoints()).get(mountPath)
    ) {
      if (source === TOMBSTONE && o.placeholder) return changed;
      const u = await this.#run('umount', [mountPath]);
      if (u.code !== 0)
        throw new ConsumerError(
          'UnmountFailed',
          `umount ${hostMountPath}: ${u.stderr.trim()} (is the volume still in use?)`,
        );
      changed = true;
    }
    if (o.placeholder) {
      await this.#mountPoint(hostMountPath, o.namespace ?? '');
      const t = await this.#run('mount', [
        '-t',
        'tmpfs',
        '-o',
        'ro,nosuid,nodev,noexec,size=4k,mode=0555',
        TOMBSTONE,
        mountPath,
      ]);
      if (t.code !== 0) throw new ConsumerError('UnmountFailed', `placeholder on ${hostMountPath}: ${t.stderr.trim()}`);
      changed = true;
    }
    return changed;
  }

  /** The source mounted topmost at the path (TOMBSTONE for the placeholder), undefined when nothing is. */
  async source(hostMountPath: string | undefined): Promise<string | undefined> {
    if (hostMountPath === undefined) return undefined;
    return (await mountPoints()).get(this.#onHost(hostMountPath));
  }

  exists(path: string): Promise<boolean> {
    return exists(path);
  }

  diskFacts(paths: readonly string[], o: { engineRunning: boolean }): Promise<Map<string, PathFacts>> {
    return gatherDiskFacts(paths, o);
  }

  /**
   * A new sparse file of `bytes` (ftruncate: no block is allocated until written).
   * O_EXCL|O_NOFOLLOW: never over an existing file, never through a symlink.
   */
  async createBackingFile(path: string, bytes: number): Promise<void> {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const h = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await h.truncate(bytes);
      await h.sync();
    } finally {
      await h.close();
    }
  }

  /**
   * Removes a deleted volume's pool file: 'absent' when there is none. Refuses
   * (ConsumerError NotInPool, nothing removed) anything but a regular file whose
   * canonical path lies directly in the pool directory's canonical path.
   */
  async removeBackingFile(path: string, directory: string): Promise<'removed' | 'absent'> {
    const l = await lstat(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (!l) return 'absent';
    if (!l.isFile())
      throw new ConsumerError(
        'NotInPool',
        `${path} is not a regular file (a symlink or a device); it is left as it is`,
      );
    const [realFile, realDirectory] = await Promise.all([realpath(path), realpath(directory)]);
    if (!removableInPool(realFile, realDirectory, basename(path)))
      throw new ConsumerError(
        'NotInPool',
        `${path} resolves to ${realFile}, outside the pool directory ${realDirectory}; it is left as it is`,
      );
    await unlink(path);
    return 'removed';
  }

  /** The volume's filesystem is mounted there (the placeholder does not count). */
  async mounted(hostMountPath: string | undefined): Promise<boolean> {
    if (hostMountPath === undefined) return false;
    const source = (await mountPoints()).get(this.#onHost(hostMountPath));
    return source !== undefined && source !== TOMBSTONE;
  }

  static exists = exists;
}
