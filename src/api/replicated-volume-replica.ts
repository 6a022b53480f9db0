// ReplicatedVolumeReplica (short name rvr): one per volume and node, owned by the
// ReplicatedVolume. One writer each way: the controller writes spec (what the
// node's engine must be: role, epoch, config, peer), the node's agent writes
// status (what the engine is). The controller aggregates the statuses into the
// volume's status.
import { z } from 'zod';
import { PROTOCOLS } from './config.ts';
import { Condition } from './condition.ts';
import {
  PoolName,
  DevicePath,
  FILESYSTEMS,
  HOST_PATH_PATTERN,
  MetaDiskSpec,
  NodeName,
  ObjectMeta,
  SplitBrainSpec,
} from './replicated-volume.ts';
import { ON_IO_ERROR } from './config.ts';

export const DESIRED_ROLES = ['Primary', 'Secondary'] as const;
export type DesiredRole = (typeof DESIRED_ROLES)[number];

const Endpoint = z.object({
  node: NodeName,
  address: z.string().min(1).max(64).describe("The node's InternalIP."),
  disk: DevicePath,
  metaDisk: MetaDiskSpec,
});

/**
 * What the node's engine must be: `Probe` — only check that the disks exist (the
 * controller starts no engine before both nodes found their disks, so a bad
 * volume touches no disk); `Up` — metadata created once, engine running;
 * `Down` — engine stopped (the volume is being deleted; a pool file is removed, a granted device's data stays).
 */
export const ENGINE_STATES = ['Probe', 'Up', 'Down'] as const;
export type EngineState = (typeof ENGINE_STATES)[number];

export const ReplicatedVolumeReplicaSpec = z.object({
  volume: NodeName.describe('The ReplicatedVolume (same namespace).'),
  engine: z
    .enum(ENGINE_STATES)
    .describe(
      'Probe: only check the disks exist; Up: metadata created once, engine running; Down: engine stopped (the volume is being deleted).',
    ),
  resource: z
    .string()
    .min(1)
    .regex(/^[A-Za-z0-9_.+-]+$/)
    .describe("The engine's resource name (NAMESPACE.VOLUME), also the NBD export name."),
  node: NodeName.describe('The node whose agent runs this replica.'),
  role: z.enum(DESIRED_ROLES).describe('The role the engine must have.'),
  initialSync: z
    .boolean()
    .default(false)
    .describe(
      "Promote with --force: a fresh pair's initial full sync from this node. Set only while both disks are new.",
    ),
  forcePrimary: z
    .boolean()
    .default(false)
    .describe(
      'Promote with --force whatever the disk holds: the operator asked for it (annotation tandem.dev/force-primary), accepting the loss of writes only the peer has.',
    ),
  epoch: z
    .number()
    .int()
    .min(0)
    .describe("The volume's epoch when this spec was written; an agent never acts on an older one."),
  port: z.number().int().min(1).max(65535).describe('The TCP port of the peer link.'),
  minor: z.number().int().min(0).describe('The minor number N of the device (`/dev/drbdN` in the status output).'),
  self: Endpoint.describe('This node: address, disk and meta-disk.'),
  peer: Endpoint.describe('The other node: address, disk and meta-disk.'),
  protocol: z.enum(PROTOCOLS).describe("The volume's replication protocol."),
  sizeBytes: z.number().int().min(0).optional().describe("The volume's usable size (spec.size), when set."),
  verifyAlg: z
    .string()
    .max(64)
    .regex(/^[a-z0-9-]+$/)
    .optional()
    .describe('verify-alg for online verify.'),
  resyncRateBytes: z.number().int().min(0).optional().describe('The resync rate limit in bytes per second.'),
  onIoError: z.enum(ON_IO_ERROR).describe("The volume's on-io-error policy."),
  splitBrain: SplitBrainSpec,
  pool: PoolName.describe(
    "The StoragePool that grants self's disk and meta-disk (the agent checks again before it opens them).",
  ),
  secretName: z
    .string()
    .min(1)
    .describe("The Secret in the operator's namespace whose shared-secret authenticates the peer link."),
  filesystem: z.enum(FILESYSTEMS).optional().describe("The volume's filesystem, with mountPath."),
  mountPath: z
    .string()
    .max(1024)
    .regex(new RegExp(`^${HOST_PATH_PATTERN}$`))
    .optional()
    .describe('Where the Primary mounts the filesystem on its host.'),
});
export type ReplicatedVolumeReplicaSpec = z.infer<typeof ReplicatedVolumeReplicaSpec>;

export const ReplicatedVolumeReplicaStatus = z.object({
  role: z
    .string()
    .optional()
    .describe("The engine's role: Primary, Secondary, or Unconfigured when no engine runs (DRBD's word)."),
  peerRole: z.string().optional().describe('The role of the peer as this engine sees it (Unknown when not connected).'),
  connectionState: z.string().optional().describe('Connected, WFConnection, StandAlone, SyncSource, SyncTarget, …'),
  diskState: z.string().optional().describe('UpToDate, Inconsistent, Outdated, Diskless, Failed, …'),
  peerDiskState: z
    .string()
    .optional()
    .describe("The peer's disk state as this engine sees it (DUnknown when not connected)."),
  syncProgress: z.number().min(0).max(100).optional().describe('Percent of the resync done, while one runs.'),
  outOfSyncBytes: z.number().int().min(0).optional().describe('Bytes marked out of sync with the peer (oos).'),
  sizeBytes: z.number().int().min(0).optional().describe("The device's size in bytes."),
  capacityBytes: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe(
      'Bytes the local disk can hold for the device now (at least sizeBytes; a pool file grows to spec.sizeBytes).',
    ),
  currentUuid: z
    .string()
    .optional()
    .describe('The current generation identifier (hex); 0000000000000004 is a disk never synced.'),
  counters: z
    .record(z.string(), z.number())
    .optional()
    .describe(
      'The /proc/drbd counters: ns, nr, dw, dr in bytes (drbdadm prints KiB); al, bm, lo, pe, ua, ap, ep as counts.',
    ),
  epoch: z.number().int().min(0).optional().describe('The epoch of the spec the agent last acted on.'),
  mounted: z.boolean().optional().describe('Whether the filesystem is mounted at mountPath (not the placeholder).'),
  lastHeartbeatTime: z
    .string()
    .optional()
    .describe(
      "When the agent last reported: at every change, every second while apart from the peer, when the controller asks, else every minute (the agent's liveness is its Lease tandem-agent-NODE, renewed every 5 s).",
    ),
  conditions: z
    .array(Condition)
    .optional()
    .describe("The agent's conditions: Ready (with the reason it is not), SplitBrain, …"),
  observedGeneration: z.number().int().min(0).optional().describe('The spec generation the agent last acted on.'),
});
export type ReplicatedVolumeReplicaStatus = z.infer<typeof ReplicatedVolumeReplicaStatus>;

export const ReplicatedVolumeReplica = z.object({
  apiVersion: z.string(),
  kind: z.string(),
  metadata: ObjectMeta,
  spec: ReplicatedVolumeReplicaSpec,
  status: ReplicatedVolumeReplicaStatus.optional(),
});
export type ReplicatedVolumeReplica = z.infer<typeof ReplicatedVolumeReplica>;

/**
 * The device size the engines reach for spec.sizeBytes: the size as the engine's
 * configuration carries it (whole KiB, render-config.ts), in whole 4 KiB blocks. The
 * agents grow to it (node-agent/plan.ts); the controller reports the volume Sized at it.
 */
export function deviceBytesFor(sizeBytes: number): number {
  return Math.floor(Math.floor(sizeBytes / 1024) / 4) * 4096;
}

/** The generation identifier of metadata that has never been part of a sync (DRBD's UUID_JUST_CREATED). */
export const UUID_JUST_CREATED_HEX = '0000000000000004';
