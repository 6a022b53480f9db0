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
  engine: z.enum(ENGINE_STATES),
  /** The engine's resource name (`<namespace>.<volume>`), also the NBD export name. */
  resource: z
    .string()
    .min(1)
    .regex(/^[A-Za-z0-9_.+-]+$/),
  node: NodeName,
  role: z.enum(DESIRED_ROLES),
  /** Promote with `--force` (a fresh pair's initial full sync from this node). Set only while both disks are new. */
  initialSync: z.boolean().default(false),
  /** Promote with `--force` whatever the disk holds: the operator's override (annotation tandem.dev/force-primary), accepting the loss of writes only the peer has. */
  forcePrimary: z.boolean().default(false),
  /** The volume's epoch when this spec was written; an agent never acts on an older one. */
  epoch: z.number().int().min(0),
  port: z.number().int().min(1).max(65535),
  /** minor for `device /dev/drbdN` (status prefix). */
  minor: z.number().int().min(0),
  self: Endpoint,
  peer: Endpoint,
  protocol: z.enum(PROTOCOLS),
  sizeBytes: z.number().int().min(0).optional(),
  verifyAlg: z
    .string()
    .max(64)
    .regex(/^[a-z0-9-]+$/)
    .optional(),
  resyncRateBytes: z.number().int().min(0).optional(),
  onIoError: z.enum(ON_IO_ERROR),
  splitBrain: SplitBrainSpec,
  /** The StoragePool that grants self's disk and meta-disk (the agent checks again before it opens them). */
  pool: PoolName,
  /** The Secret (same namespace) whose `shared-secret` authenticates the peer link. */
  secretName: z.string().min(1),
  filesystem: z.enum(FILESYSTEMS).optional(),
  mountPath: z
    .string()
    .max(1024)
    .regex(new RegExp(`^${HOST_PATH_PATTERN}$`))
    .optional(),
});
export type ReplicatedVolumeReplicaSpec = z.infer<typeof ReplicatedVolumeReplicaSpec>;

export const ReplicatedVolumeReplicaStatus = z.object({
  /** `Unconfigured` when no engine runs (DRBD's word for a resource that is not up). */
  role: z.string().optional(),
  peerRole: z.string().optional(),
  connectionState: z.string().optional(),
  diskState: z.string().optional(),
  peerDiskState: z.string().optional(),
  syncProgress: z.number().min(0).max(100).optional(),
  outOfSyncBytes: z.number().int().min(0).optional(),
  sizeBytes: z.number().int().min(0).optional(),
  /** The current generation identifier (hex); `0000000000000004` is a disk never synced. */
  currentUuid: z.string().optional(),
  counters: z.record(z.string(), z.number()).optional(),
  /** The epoch of the spec the agent last acted on. */
  epoch: z.number().int().min(0).optional(),
  mounted: z.boolean().optional(),
  lastHeartbeatTime: z.string().optional(),
  conditions: z.array(Condition).optional(),
  observedGeneration: z.number().int().min(0).optional(),
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

/** The generation identifier of metadata that has never been part of a sync (DRBD's UUID_JUST_CREATED). */
export const UUID_JUST_CREATED_HEX = '0000000000000004';
