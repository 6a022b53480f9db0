// Where the Primary's agent may mount a volume's filesystem (spec.mountPath) until
// the CSI driver replaces host mounts (docs/design/2026-12-06-tenancy.md). A user
// names a path; the agent mounts only:
//
//   - under the admin's mount root (--mount-root, the chart's agent.mountRoot;
//     `{namespace}` in it is the volume's namespace, so each namespace gets its own tree),
//   - at a canonical path (no `.`/`..`/`//`, no trailing `/`, nothing to quote),
//   - where no other replica of this node mounts, neither the same path nor one
//     inside or around it (a volume must not mount into another volume's filesystem
//     or cover it),
//   - through real directories only: no component between the root and the mount
//     point is a symlink or a mount point (checked on the host, prepareMountPoint),
//   - with nosuid,nodev (consumer.ts).
//
// checkMountPath is the pure part, table-tested; prepareMountPoint is the I/O.
import { lstat, mkdir, readFile, realpath } from 'node:fs/promises';
import { HOST_PATH_PATTERN } from '../api/replicated-volume.ts';

/** The tutorial's /mydata: the chart's default mount root. */
export const DEFAULT_MOUNT_ROOT = '/mydata';

export type MountRefusal = { reason: 'MountPathRefused'; message: string };

const CANONICAL = new RegExp(`^${HOST_PATH_PATTERN}$`);

/** The mount root for a namespace: `{namespace}` replaced; undefined when the template is not a canonical path. */
export function mountRootFor(template: string, namespace: string): string | undefined {
  const root = template.replaceAll('{namespace}', namespace);
  return root === '/' || CANONICAL.test(root) ? root : undefined;
}

/** `inner` is `outer` or lies below it. */
export function within(outer: string, inner: string): boolean {
  return inner === outer || inner.startsWith(outer === '/' ? '/' : `${outer}/`);
}

/** A replica of this node that mounts somewhere: its key (namespace/name) and creation time (ISO 8601). */
export type MountClaim = { key: string; created: string; mountPath: string };

/** `a` claimed first: the older replica, then the smaller key (so two claims never refuse each other both). */
const before = (a: MountClaim, b: MountClaim) => a.created < b.created || (a.created === b.created && a.key < b.key);

/**
 * May this replica mount at its mount path? `others` are the claims of this node's
 * other replicas (every namespace); of two overlapping claims the older one wins,
 * so a newer volume cannot take or block an older one's path. Undefined: yes.
 */
export function checkMountPath(o: {
  rootTemplate: string;
  namespace: string;
  me: MountClaim;
  others: readonly MountClaim[];
}): MountRefusal | undefined {
  const mountPath = o.me.mountPath;
  const refuse = (message: string): MountRefusal => ({ reason: 'MountPathRefused', message });
  const root = mountRootFor(o.rootTemplate, o.namespace);
  if (root === undefined) return refuse(`the node's mount root ${o.rootTemplate} is not a canonical absolute path`);
  if (!CANONICAL.test(mountPath))
    return refuse(`${mountPath} is not a canonical absolute path (no ., .., // or trailing /)`);
  if (mountPath === root || !within(root, mountPath))
    return refuse(`${mountPath} is not below the mount root ${root} that the administrator set for this namespace`);
  for (const other of o.others) {
    if (other.key === o.me.key || !before(other, o.me)) continue;
    if (other.mountPath === mountPath) return refuse(`${mountPath} is the mount path of ${other.key} on this node`);
    if (within(other.mountPath, mountPath) || within(mountPath, other.mountPath))
      return refuse(`${mountPath} overlaps the mount path ${other.mountPath} of ${other.key} on this node`);
  }
  return undefined;
}

export class MountPathError extends Error {
  readonly code = 'TANDEM_ERR_MOUNT_PATH';
  readonly reason = 'MountPathRefused';
  constructor(message: string) {
    super(message);
    this.name = 'MountPathError';
  }
}

/** Mount points in this mount namespace. */
async function mountPointSet(): Promise<Set<string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f[4]) out.add(f[4].replace(/\\040/g, ' '));
  }
  return out;
}

/**
 * Makes the mount point `root/…/leaf` as seen through `hostRoot` (the host's / in this
 * mount namespace), one directory at a time, refusing a symlink anywhere from the root
 * down and a mount point between the root and the leaf (the leaf itself may be one:
 * the placeholder, or the volume's own filesystem). The root must exist and be itself
 * (no symlink in it). Returns the path to mount on, in this mount namespace.
 */
export async function prepareMountPoint(hostRoot: string, root: string, mountPath: string): Promise<string> {
  if (!within(root, mountPath) || mountPath === root) throw new MountPathError(`${mountPath} is not below ${root}`);
  const onHost = (p: string) => hostRoot + p;
  await mkdir(onHost(root), { recursive: true, mode: 0o755 });
  const realRoot = await realpath(onHost(root));
  if (realRoot !== onHost(root))
    throw new MountPathError(`the mount root ${root} is (or lies under) a symlink: ${realRoot.slice(hostRoot.length)}`);
  const mounts = await mountPointSet();
  const parts = mountPath.slice(root === '/' ? 1 : root.length + 1).split('/');
  let at = root === '/' ? '' : root;
  for (const [i, part] of parts.entries()) {
    at = `${at}/${part}`;
    const leaf = i === parts.length - 1;
    const st = await lstat(onHost(at)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (st === undefined) {
      await mkdir(onHost(at), { mode: 0o755 });
      continue;
    }
    if (st.isSymbolicLink()) throw new MountPathError(`${at} is a symlink; the agent mounts only through directories`);
    if (!st.isDirectory()) throw new MountPathError(`${at} exists and is not a directory`);
    if (!leaf && mounts.has(onHost(at)))
      throw new MountPathError(`${at} is a mount point (another filesystem); the agent does not mount inside it`);
  }
  return onHost(mountPath);
}

/** The mount claims among a node's replicas (raw objects from the agent's cache). */
export function mountClaims(
  objects: readonly {
    metadata?: { name?: string; namespace?: string; creationTimestamp?: Date | string };
    spec?: unknown;
  }[],
): MountClaim[] {
  const out: MountClaim[] = [];
  for (const o of objects) {
    const mountPath = (o.spec as { mountPath?: unknown } | undefined)?.mountPath;
    if (typeof mountPath !== 'string') continue;
    const created = o.metadata?.creationTimestamp;
    out.push({
      key: `${o.metadata?.namespace}/${o.metadata?.name}`,
      created: created instanceof Date ? created.toISOString() : (created ?? ''),
      mountPath,
    });
  }
  return out;
}
