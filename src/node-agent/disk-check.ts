// The agent checks before it touches (issue 15 item 2). Before a replica's disk
// and meta-disk are given to an engine — create-md writes metadata, a sync
// overwrites the disk — the agent proves that this node's administrator granted
// them to this volume, that they are what they claim to be and that nobody else
// uses them. The decision is a pure function of facts read first (checkDisks,
// table-tested, as nbd/policy.ts checkRequest); gatherDiskFacts is the thin I/O.
//
//   pool       the replica's StoragePool exists                        PoolNotFound
//   canonical  absolute, no . or .. or //, nothing to quote            NotCanonical
//   granted    a device the pool grants on this node, or this          NotGranted
//              volume's own file in the pool's directory
//   distinct   the meta-disk is not the disk (by name and by device)   SameDevice
//   exclusive  no other replica of this node names it (an indexed      InUse
//              meta-disk may be shared slot by slot), no kernel holder
//              (device mapper, md), no exclusive opener (O_EXCL)
//   real       a block device or a regular file; a pool file is no     NotABlockDevice,
//              symlink; a device's symlink (by-id) is resolved and      NotCanonical
//              checked as the device it names
//   unmounted  no filesystem on it is mounted                          Mounted
//   present    missing: a pool file is created (sparse); a device is   DiskMissing
//              reported missing
//
// A refusal reports DisksFound=False with the reason and plans nothing: nothing
// is opened for writing. While the volume's engine runs (it holds the disk), the
// checks that only a running engine could trip (O_EXCL) are skipped.
import { constants } from 'node:fs';
import { lstat, open, readdir, readFile, realpath, stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { HOST_PATH_PATTERN } from '../api/replicated-volume.ts';
import { grants, metaDiskPath, type PoolNodeGrant } from '../api/storage-pool.ts';
import { BLOCK_SIZE } from '../replication/bitmap.ts';
import { internalFileBytes } from '../replication/metadata.ts';

/** What was found at one path, read before deciding. */
export type PathFacts = {
  /** lstat of the path as named: a symlink is 'symlink', whatever it points to. */
  kind: 'missing' | 'block' | 'file' | 'symlink' | 'other';
  /** What a symlink resolves to (realpath), and the kind found there. */
  target?: { path: string; kind: 'missing' | 'block' | 'file' | 'other' } | undefined;
  /** The device (major:minor) of a block device; of a file, its st_dev:st_ino. */
  id?: string | undefined;
  /** Mount points of a filesystem on this device (mountinfo's major:minor). */
  mountedAt?: readonly string[] | undefined;
  /** Kernel holders (/sys/dev/block/M:m/holders: dm-0, md0 …). */
  holders?: readonly string[] | undefined;
  /** An exclusive open (O_EXCL) failed with EBUSY: the kernel or a process holds it. */
  busy?: boolean | undefined;
  /** Of a missing path or a file: the bytes free (to root) on the filesystem that holds (would hold) it. */
  freeBytes?: number | undefined;
  /** Of a file: its size in bytes. */
  size?: number | undefined;
};

export type DiskCheckInput = {
  node: string;
  namespace: string;
  volume: string;
  pool: string;
  /** The pool's grant on this node; `poolFound` false: there is no such pool. */
  poolFound: boolean;
  grant: PoolNodeGrant | undefined;
  disk: string;
  metaDisk: string;
  /** Facts per path (the disk and the meta-disk's device). */
  facts: ReadonlyMap<string, PathFacts>;
  /** This replica's key (namespace/name) and creation time (ISO 8601). */
  me: { key: string; created: string };
  /**
   * This node's replicas (this one may be among them): keys, creation times, disks and
   * meta-disks. Of two that claim one device the older wins (then the smaller key), so
   * a new volume can neither take nor block an older volume's disk.
   */
  others: readonly DiskClaim[];
  /** The usable size a new pool file must hold (spec.sizeBytes). */
  sizeBytes: number | undefined;
};

export type PoolFileFacts = { bytes: number; freeBytes: number | undefined };

export type DiskClaim = { key: string; created: string; disk: string; metaDisk: string };

export const DISK_REFUSALS = [
  'PoolNotFound',
  'NotCanonical',
  'NotGranted',
  'SameDevice',
  'InUse',
  'NotABlockDevice',
  'Mounted',
  'NoSize',
  'NoSpace',
] as const;
export type DiskRefusal = (typeof DISK_REFUSALS)[number];

export type DiskVerdict =
  /** `poolFile`: the disk is a file in the pool's directory, its size and the room left beside it. */
  | { kind: 'ok'; poolFile?: PoolFileFacts }
  | { kind: 'create-file'; path: string; bytes: number }
  | { kind: 'missing'; paths: string[] }
  | { kind: 'refused'; reason: DiskRefusal; message: string };

const CANONICAL = new RegExp(`^${HOST_PATH_PATTERN}$`);

/**
 * A new backing file that holds `usable` bytes of data and the internal metadata after
 * them. The rule is a grown file's (metadata.ts internalFileBytes), with room to spare:
 * the metadata is sized for a file of twice the data and a MiB, more than this file ever
 * is (its bitmap grows with the file), where a grow sizes it for the file exactly; and a
 * block more. The spare is a few KiB of bitmap per GiB.
 */
export function backingFileBytes(usable: number): number {
  const data = Math.ceil(usable / BLOCK_SIZE) * BLOCK_SIZE;
  return internalFileBytes(data, 2 * data + (1 << 20)) + BLOCK_SIZE;
}

/** Two meta-disks collide unless they are different slots of one indexed device. */
function metaCollides(a: string, b: string): boolean {
  const pa = metaDiskPath(a);
  const pb = metaDiskPath(b);
  if (pa === undefined || pb === undefined || pa !== pb) return false;
  const ia = /\[(\d+)\]$/.exec(a)?.[1];
  const ib = /\[(\d+)\]$/.exec(b)?.[1];
  return ia === undefined || ib === undefined || ia === ib;
}

export function checkDisks(c: DiskCheckInput): DiskVerdict {
  const refuse = (reason: DiskRefusal, message: string): DiskVerdict => ({ kind: 'refused', reason, message });
  if (!c.poolFound) return refuse('PoolNotFound', `StoragePool ${c.pool} does not exist; nothing was touched`);
  const meta = metaDiskPath(c.metaDisk);
  const paths = [c.disk, ...(meta !== undefined ? [meta] : [])];
  for (const p of paths)
    if (!CANONICAL.test(p)) return refuse('NotCanonical', `${p} is not a canonical absolute path; nothing was touched`);

  const own = { namespace: c.namespace, volume: c.volume };
  const diskGrant = grants(c.grant, c.disk, own);
  if (diskGrant === undefined)
    return refuse(
      'NotGranted',
      `StoragePool ${c.pool} does not grant ${c.disk} on node ${c.node}; nothing was touched`,
    );
  if (meta !== undefined && grants(c.grant, meta, own) !== 'device')
    return refuse(
      'NotGranted',
      `StoragePool ${c.pool} does not grant the meta-disk ${meta} on node ${c.node}; nothing was touched`,
    );
  if (meta === c.disk) return refuse('SameDevice', `the meta-disk ${c.metaDisk} is the disk ${c.disk}`);

  for (const o of c.others) {
    if (o.key === c.me.key || !(o.created < c.me.created || (o.created === c.me.created && o.key < c.me.key))) continue;
    const clash = [
      ...(o.disk === c.disk || metaDiskPath(o.metaDisk) === c.disk ? [c.disk] : []),
      ...(meta !== undefined && o.disk === meta ? [meta] : []),
      ...(metaCollides(o.metaDisk, c.metaDisk) ? [`the meta-disk ${c.metaDisk}`] : []),
    ];
    if (clash.length > 0)
      return refuse('InUse', `${o.key} on this node already uses ${clash.join(' and ')}; nothing was touched`);
  }

  // What is really there.
  const missing: string[] = [];
  const ids = new Map<string, string>();
  for (const p of paths) {
    const f = c.facts.get(p) ?? { kind: 'missing' };
    const isPoolFile = p === c.disk && diskGrant === 'file';
    if (f.kind === 'symlink' && isPoolFile)
      return refuse('NotCanonical', `${p} is a symlink; a pool file must be a regular file; nothing was touched`);
    const kind = f.kind === 'symlink' ? (f.target?.kind ?? 'missing') : f.kind;
    if (kind === 'missing') {
      missing.push(p);
      continue;
    }
    if (kind !== 'block' && kind !== 'file')
      return refuse(
        'NotABlockDevice',
        `${p}${f.target ? ` (${f.target.path})` : ''} is neither a block device nor a file`,
      );
    if (f.mountedAt?.length)
      return refuse('Mounted', `${p} holds a filesystem mounted at ${f.mountedAt.join(', ')}; nothing was touched`);
    if (f.holders?.length)
      return refuse('InUse', `${p} is held by ${f.holders.join(', ')} (device mapper or md); nothing was touched`);
    if (f.busy) return refuse('InUse', `${p} is open exclusively by another user (EBUSY); nothing was touched`);
    if (f.id !== undefined) {
      const same = [...ids].find(([, id]) => id === f.id);
      if (same) return refuse('SameDevice', `the meta-disk ${c.metaDisk} and the disk ${c.disk} are the same device`);
      ids.set(p, f.id);
    }
  }
  if (missing.length === 0) {
    const f = c.facts.get(c.disk);
    return diskGrant === 'file' && f?.kind === 'file' && f.size !== undefined
      ? { kind: 'ok', poolFile: { bytes: f.size, freeBytes: f.freeBytes } }
      : { kind: 'ok' };
  }
  if (missing.length === 1 && missing[0] === c.disk && diskGrant === 'file') {
    if (c.sizeBytes === undefined || c.sizeBytes <= 0)
      return refuse('NoSize', `${c.disk} is a new pool file and the volume has no size`);
    // Sparse, but a full sync writes every block: the pool's filesystem must hold all of it.
    const bytes = backingFileBytes(c.sizeBytes);
    const free = c.facts.get(c.disk)?.freeBytes;
    if (free !== undefined && bytes > free)
      return refuse(
        'NoSpace',
        `${c.disk} would need ${bytes} bytes and the pool's filesystem has ${free} free; nothing was created`,
      );
    return { kind: 'create-file', path: c.disk, bytes };
  }
  return { kind: 'missing', paths: missing };
}

// --- I/O: read the facts ----------------------------------------------------------------

const kindOf = (s: { isBlockDevice(): boolean; isFile(): boolean; isSymbolicLink(): boolean }) =>
  s.isSymbolicLink() ? 'symlink' : s.isBlockDevice() ? 'block' : s.isFile() ? 'file' : 'other';

const majMin = (rdev: number) => `${Math.floor(rdev / 256) & 0xfff}:${(rdev & 0xff) | ((rdev >> 12) & 0xfff00)}`;

/** major:minor → mount points, from this mount namespace's mountinfo. */
async function mountedDevices(): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f[2] && f[4]) out.set(f[2], [...(out.get(f[2]) ?? []), f[4]]);
  }
  return out;
}

/** Bytes free on the filesystem that holds `path` (its nearest existing ancestor); undefined if unknown. */
async function freeBytesFor(path: string): Promise<number | undefined> {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const s = await statfs(dir).catch(() => undefined);
    if (s) return s.bfree * s.bsize;
    if (dir === '/') return undefined;
  }
}

/**
 * Reads what checkDisks needs about each path, opening nothing for writing. With
 * `engineRunning` the exclusive-open probe is skipped (the volume's own engine holds
 * the device).
 */
export async function gatherDiskFacts(
  paths: readonly string[],
  o: { engineRunning: boolean },
): Promise<Map<string, PathFacts>> {
  const mounts = await mountedDevices();
  const out = new Map<string, PathFacts>();
  for (const p of paths) {
    const l = await lstat(p).catch(() => undefined);
    if (!l) {
      out.set(p, { kind: 'missing', freeBytes: await freeBytesFor(p) });
      continue;
    }
    const kind = kindOf(l);
    let target: PathFacts['target'];
    if (kind === 'symlink') {
      const real = await realpath(p).catch(() => undefined);
      const s = real ? await stat(real).catch(() => undefined) : undefined;
      target = { path: real ?? '?', kind: s ? (kindOf(s) as 'block' | 'file' | 'other') : 'missing' };
    }
    const s = await stat(p).catch(() => undefined);
    const facts: PathFacts = { kind, ...(target ? { target } : {}) };
    if (s?.isBlockDevice()) {
      const id = majMin(s.rdev);
      facts.id = id;
      facts.mountedAt = mounts.get(id) ?? [];
      facts.holders = await readdir(`/sys/dev/block/${id}/holders`).catch(() => []);
      if (!o.engineRunning) {
        // O_EXCL on a block device: EBUSY when mounted or claimed (md, dm, another O_EXCL opener).
        const h = await open(p, constants.O_RDONLY | constants.O_EXCL).catch((err: NodeJS.ErrnoException) => err);
        if ('close' in h) await h.close();
        else if (h.code === 'EBUSY') facts.busy = true;
      }
    } else if (s?.isFile()) {
      facts.id = `${s.dev}:${s.ino}`;
      facts.size = s.size;
      facts.freeBytes = await freeBytesFor(p);
    }
    out.set(p, facts);
  }
  return out;
}

/** The disk claims among a node's replicas (raw objects from the agent's cache). */
export function diskClaims(
  objects: readonly {
    metadata?: { name?: string; namespace?: string; creationTimestamp?: Date | string };
    spec?: unknown;
  }[],
): DiskClaim[] {
  const out: DiskClaim[] = [];
  for (const o of objects) {
    const self = (o.spec as { self?: { disk?: unknown; metaDisk?: unknown } } | undefined)?.self;
    if (typeof self?.disk !== 'string' || typeof self.metaDisk !== 'string') continue;
    const created = o.metadata?.creationTimestamp;
    out.push({
      key: `${o.metadata?.namespace}/${o.metadata?.name}`,
      created: created instanceof Date ? created.toISOString() : (created ?? ''),
      disk: self.disk,
      metaDisk: self.metaDisk,
    });
  }
  return out;
}

// --- Deleting a volume: its pool file goes, and nothing else ----------------------------
//
// A deleted volume's backing file (its data and, with internal metadata, its metadata)
// is removed from the pool's directory on each node (issue 15 item 6). The agent removes
// only a file it could have created: this volume's own name in the directory its pool
// grants on this node, a regular file (never a symlink), whose canonical path
// (realpath, every symlink of the directory resolved) lies directly in the canonical
// pool directory. A granted device is never wiped: its data stays, as DRBD leaves a
// disk when a resource is removed.

/** What to do with a deleted replica's disk. */
export type FileRemoval =
  | { kind: 'none'; why: string }
  | { kind: 'remove'; path: string; directory: string }
  | { kind: 'keep'; message: string };

export function backingFileRemoval(c: {
  namespace: string;
  volume: string;
  pool: string;
  poolFound: boolean;
  grant: PoolNodeGrant | undefined;
  disk: string;
}): FileRemoval {
  const own = { namespace: c.namespace, volume: c.volume };
  if (!c.poolFound) return { kind: 'keep', message: `StoragePool ${c.pool} is gone; ${c.disk} is left as it is` };
  const g = grants(c.grant, c.disk, own);
  if (g === 'device') return { kind: 'none', why: `${c.disk} is a granted device; its data stays` };
  if (g === undefined || c.grant?.directory === undefined)
    return {
      kind: 'keep',
      message: `${c.disk} is not this volume's file in StoragePool ${c.pool}; it is left as it is`,
    };
  const directory = c.grant.directory;
  if (!CANONICAL.test(c.disk) || !CANONICAL.test(directory) || dirname(c.disk) !== directory)
    return { kind: 'keep', message: `${c.disk} is not a canonical path in ${directory}; it is left as it is` };
  return { kind: 'remove', path: c.disk, directory };
}

/**
 * May the file found at `realFile` (realpath of the pool file) be removed as the pool
 * file `name` of the directory whose realpath is `realDirectory`? Only when it is that
 * name directly in that directory: a symlinked or climbing path resolves elsewhere.
 */
export function removableInPool(realFile: string, realDirectory: string, name: string): boolean {
  if (!realDirectory.startsWith('/') || realDirectory.includes('\0')) return false;
  const dir = realDirectory === '/' ? '' : realDirectory.replace(/\/+$/, '');
  return realFile === `${dir}/${name}` && !name.includes('/') && name !== '.' && name !== '..' && name !== '';
}
