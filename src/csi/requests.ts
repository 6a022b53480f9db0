// What a CSI request may ask of tandem, checked before anything touches the API
// server or a node (the model is src/nbd/policy.ts: validate first, one table of
// refusals). Pure functions over the decoded messages; table-tested in
// requests.test.ts.
//
// A tandem volume has one Primary at a time, so only single-node access modes are
// served; both access types are: a filesystem (ext4 or xfs, made once) or the raw
// block device.
import { FILESYSTEMS } from '../api/replicated-volume.ts';
import { ON_IO_ERROR, PROTOCOLS } from '../api/config.ts';
import { CsiError, invalid } from './errors.ts';
import { status } from '@grpc/grpc-js';

export type AccessMode =
  | 'UNKNOWN'
  | 'SINGLE_NODE_WRITER'
  | 'SINGLE_NODE_READER_ONLY'
  | 'MULTI_NODE_READER_ONLY'
  | 'MULTI_NODE_SINGLE_WRITER'
  | 'MULTI_NODE_MULTI_WRITER'
  | 'SINGLE_NODE_SINGLE_WRITER'
  | 'SINGLE_NODE_MULTI_WRITER';

/** csi.proto VolumeCapability as @grpc/proto-loader decodes it (keepCase, enums as strings, oneofs). */
export type VolumeCapability = {
  access_type?: 'block' | 'mount' | undefined;
  block?: object | null | undefined;
  mount?: { fs_type?: string; mount_flags?: string[]; volume_mount_group?: string } | null | undefined;
  access_mode?: { mode?: AccessMode | string } | null | undefined;
};

/** The modes a single-Primary volume can honour. */
export const SUPPORTED_MODES: readonly string[] = [
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
];

/** The filesystem when none is asked for. */
export const DEFAULT_FS = 'ext4';

/** Why this capability cannot be served, or undefined when it can. */
export function unsupportedCapability(c: VolumeCapability): string | undefined {
  const mode = c.access_mode?.mode ?? 'UNKNOWN';
  if (!SUPPORTED_MODES.includes(mode))
    return `access mode ${mode} is not supported: a tandem volume has one Primary node at a time`;
  if (c.access_type === 'mount' || (c.access_type === undefined && c.mount)) {
    const fs = c.mount?.fs_type || DEFAULT_FS;
    if (!(FILESYSTEMS as readonly string[]).includes(fs))
      return `fs_type ${fs} is not supported (${FILESYSTEMS.join(', ')})`;
    return undefined;
  }
  if (c.access_type === 'block' || c.block) return undefined;
  return 'the capability names neither block nor mount access';
}

/** Capabilities required and each one servable: INVALID_ARGUMENT otherwise (CreateVolume, NodeStage …). */
export function checkCapabilities(caps: readonly VolumeCapability[] | undefined, what: string): void {
  if (!caps || caps.length === 0) throw invalid(`${what}: volume_capabilities are required`);
  for (const c of caps) {
    const why = unsupportedCapability(c);
    if (why) throw invalid(`${what}: ${why}`);
  }
}

export function isBlock(c: VolumeCapability): boolean {
  return c.access_type === 'block' || (c.access_type === undefined && !!c.block && !c.mount);
}

/** 1 GiB when the request names no size. */
export const DEFAULT_BYTES = 1 << 30;
/** Sizes are whole MiB (the engine's extents and the pool file are MiB-aligned). */
export const SIZE_ALIGN = 1 << 20;

/**
 * The size to create from capacity_range: at least required_bytes, rounded up to a
 * MiB, never above limit_bytes (OUT_OF_RANGE when the two cannot both hold).
 */
export function decideSize(range: { required_bytes?: number; limit_bytes?: number } | null | undefined): number {
  const required = Number(range?.required_bytes ?? 0);
  const limit = Number(range?.limit_bytes ?? 0);
  if (required < 0 || limit < 0) throw invalid('capacity_range: bytes must not be negative');
  if (limit > 0 && required > limit)
    throw new CsiError(status.OUT_OF_RANGE, `capacity_range: required_bytes ${required} > limit_bytes ${limit}`);
  const want = required > 0 ? required : limit > 0 ? Math.min(DEFAULT_BYTES, limit) : DEFAULT_BYTES;
  const size = Math.ceil(want / SIZE_ALIGN) * SIZE_ALIGN;
  if (limit > 0 && size > limit) {
    // Rounding up would pass the limit: only an exact MiB multiple below it fits.
    const down = Math.floor(limit / SIZE_ALIGN) * SIZE_ALIGN;
    if (down < Math.max(required, 1))
      throw new CsiError(
        status.OUT_OF_RANGE,
        `capacity_range: no whole MiB between required_bytes ${required} and limit_bytes ${limit}`,
      );
    return down;
  }
  return size;
}

/** StorageClass parameters tandem reads (docs/reference/storageclass.md). */
export type VolumeParameters = {
  pool: string;
  protocol?: (typeof PROTOCOLS)[number];
  resyncRate?: string;
  verifyAlg?: string;
  onIoError?: (typeof ON_IO_ERROR)[number];
  failover?: boolean;
  nodeNotReadySeconds?: number;
};

/** Keys the external-provisioner adds (--extra-create-metadata) or reserves: never ours. */
const RESERVED_PREFIX = 'csi.storage.k8s.io/';
const QUANTITY = /^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$/;
const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** StorageClass parameters → the volume's spec fields; an unknown key or bad value is INVALID_ARGUMENT. */
export function parseParameters(params: Readonly<Record<string, string>> | undefined): VolumeParameters {
  const p = { ...(params ?? {}) };
  const bad = (key: string, why: string) => invalid(`parameter ${key}=${JSON.stringify(p[key])}: ${why}`);
  const pool = p.pool;
  if (pool === undefined || pool === '')
    throw invalid('parameter pool is required: the StoragePool the replicas draw from');
  if (!NAME.test(pool) || pool.length > 253) throw bad('pool', 'not a StoragePool name');
  const out: VolumeParameters = { pool };
  for (const [key, value] of Object.entries(p)) {
    if (key === 'pool' || key.startsWith(RESERVED_PREFIX)) continue;
    switch (key) {
      case 'protocol':
        if (!(PROTOCOLS as readonly string[]).includes(value)) throw bad(key, `one of ${PROTOCOLS.join(', ')}`);
        out.protocol = value as VolumeParameters['protocol'];
        break;
      case 'resyncRate':
        if (!QUANTITY.test(value)) throw bad(key, 'a quantity in bytes per second, e.g. 100Mi');
        out.resyncRate = value;
        break;
      case 'verifyAlg':
        if (!/^[a-z0-9-]{1,64}$/.test(value)) throw bad(key, 'a digest name, e.g. sha256');
        out.verifyAlg = value;
        break;
      case 'onIoError':
        if (!(ON_IO_ERROR as readonly string[]).includes(value)) throw bad(key, `one of ${ON_IO_ERROR.join(', ')}`);
        out.onIoError = value as VolumeParameters['onIoError'];
        break;
      case 'failover':
        if (value !== 'true' && value !== 'false') throw bad(key, 'true or false');
        out.failover = value === 'true';
        break;
      case 'nodeNotReadySeconds': {
        const n = Number(value);
        if (!/^[0-9]+$/.test(value) || n < 1 || n > 3600) throw bad(key, 'whole seconds, 1 to 3600');
        out.nodeNotReadySeconds = n;
        break;
      }
      default:
        throw invalid(
          `unknown parameter ${key} (pool, protocol, resyncRate, verifyAlg, onIoError, failover, nodeNotReadySeconds)`,
        );
    }
  }
  return out;
}
