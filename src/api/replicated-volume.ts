// ReplicatedVolume (tandem.dev/v1alpha1, short name rv): one DRBD resource,
// mirrored between two nodes (DESIGN.md §4). The user writes spec; the
// controller alone writes status. The CRD in crds/ is generated from these
// schemas (`npm run gen:crds`), so the API server enforces what zod checks.
import { z } from 'zod';
import { AFTER_SB_0PRI, AFTER_SB_1PRI, AFTER_SB_2PRI, ON_IO_ERROR, PROTOCOLS } from './config.ts';
import { Condition } from './condition.ts';
import { QUANTITY_PATTERN } from './quantity.ts';

const cel = (rule: string, message: string, extra: Record<string, unknown> = {}) => ({ rule, message, ...extra });

export const NodeName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/)
  .describe('A Kubernetes Node name.');
/**
 * One segment of a host path: the characters device names use (udev's by-id, by-path,
 * by-uuid names included) and at least one that is not a dot, so never `.` or `..`.
 * RE2 (the API server's pattern engine) has no look-ahead, hence this spelling.
 */
const SEGMENT = '[A-Za-z0-9._+:@,=~%-]*[A-Za-z0-9_+:@,=~%-][A-Za-z0-9._+:@,=~%-]*';
/** An absolute, canonical host path: no `.` or `..` segment, no `//`, no trailing `/`, nothing to quote. */
export const HOST_PATH_PATTERN = `(/${SEGMENT})+`;
export const DevicePath = z
  .string()
  .max(1024)
  .regex(new RegExp(`^${HOST_PATH_PATTERN}$`))
  .describe(
    'An absolute, canonical path of a block device (or file) on the node, e.g. /dev/sdb1; a StoragePool must grant it.',
  );
export const MetaDiskSpec = z
  .string()
  .max(1024)
  .regex(new RegExp(`^(internal|${HOST_PATH_PATTERN}(\\[[0-9]{1,6}\\])?)$`))
  .describe(
    'Where DRBD-style metadata lives: `internal` (end of the disk), `/dev/sdb2[0]` (indexed external, 128 MiB slots) or `/dev/sdb2` (the whole device).',
  );
export const Quantity = z.string().max(64).regex(new RegExp(QUANTITY_PATTERN));

export const ReplicaPlacement = z.object({
  node: NodeName,
  disk: DevicePath.optional().describe(
    "A block device the volume's pool grants on this node. Omitted: a sparse file in the pool's directory (spec.size needed).",
  ),
  metaDisk: MetaDiskSpec.default('internal'),
});
export type ReplicaPlacement = z.infer<typeof ReplicaPlacement>;

export const FailoverSpec = z.object({
  enabled: z.boolean().default(true).describe("Promote the Secondary automatically when the Primary's node is lost."),
  nodeNotReadySeconds: z
    .number()
    .int()
    .min(1)
    .max(3600)
    .default(10)
    .describe("How long the Primary's Node must not be Ready before failing over."),
});

export const SplitBrainSpec = z
  .object({
    afterSb0pri: z
      .enum(AFTER_SB_0PRI)
      .default('disconnect')
      .describe('after-sb-0pri: a split brain found while neither node is Primary.'),
    afterSb1pri: z
      .enum(AFTER_SB_1PRI)
      .default('disconnect')
      .describe('after-sb-1pri: a split brain found while one node is Primary.'),
    afterSb2pri: z
      .enum(AFTER_SB_2PRI)
      .default('disconnect')
      .describe('after-sb-2pri: a split brain found while both nodes are Primary.'),
  })
  .describe(
    'drbd.conf after-sb-0pri/1pri/2pri: what to do when the generation identifiers show a split brain at connect.',
  );

export const FILESYSTEMS = ['xfs', 'ext4'] as const;

/** A StoragePool's name (cluster-scoped, so a DNS subdomain). */
export const PoolName = z
  .string()
  .min(1)
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);

export const ReplicatedVolumeSpec = z
  .object({
    pool: PoolName.describe(
      'The StoragePool (defined by an administrator) the replicas draw from: disk and metaDisk must be devices it grants on their nodes, or omitted for a file in its directory.',
    ),
    size: Quantity.optional().describe('Usable size (a quantity, e.g. 1Gi). Default: the smaller of the two disks.'),
    protocol: z
      .enum(PROTOCOLS)
      .default('C')
      .describe('Replication protocol: A (async), B (memory-synchronous), C (synchronous).'),
    replicas: z
      .array(ReplicaPlacement)
      .min(2)
      .max(2)
      .meta({
        'x-kubernetes-validations': [
          cel('self.all(r, self.exists_one(s, s.node == r.node))', 'the two replicas must be on two different nodes'),
          cel('self == oldSelf', 'replicas cannot be changed once the volume exists', {
            reason: 'FieldValueForbidden',
          }),
        ],
      })
      .describe('Exactly two replicas, on two different nodes: which disk and metadata each uses.'),
    primary: NodeName.optional().describe(
      'The preferred Primary. Changing it moves the Primary role (the consumer is unmounted first). With failover, the only fields that may change after creation.',
    ),
    verifyAlg: z
      .string()
      .max(64)
      .regex(/^[a-z0-9-]+$/)
      .optional()
      .describe('verify-alg for online verify, e.g. sha1.'),
    resyncRate: Quantity.optional().describe('Resync rate limit in bytes per second (a quantity, e.g. 100Mi).'),
    onIoError: z
      .enum(ON_IO_ERROR)
      .default('detach')
      .describe(
        'on-io-error: what a node does when its disk fails a read, write or sync. detach: go Diskless and serve I/O from the peer.',
      ),
    failover: FailoverSpec.default({ enabled: true, nodeNotReadySeconds: 10 }).describe(
      "Automatic failover when the Primary's node is lost (the API server is the tiebreaker; no third node).",
    ),
    splitBrain: SplitBrainSpec.default({
      afterSb0pri: 'disconnect',
      afterSb1pri: 'disconnect',
      afterSb2pri: 'disconnect',
    }),
    filesystem: z
      .enum(FILESYSTEMS)
      .optional()
      .describe(
        'With mountPath: the agent on the Primary creates this filesystem once (never over existing data) and mounts it.',
      ),
    mountPath: z
      .string()
      .max(1024)
      .regex(new RegExp(`^${HOST_PATH_PATTERN}$`))
      .optional()
      .describe('Host path where the Primary mounts the filesystem, as the tutorial mounts /mydata/mysql.'),
  })
  .meta({
    'x-kubernetes-validations': [
      cel(
        '!has(self.primary) || self.replicas.exists(r, r.node == self.primary)',
        'primary must be the node of one of the replicas',
        { fieldPath: '.primary' },
      ),
      cel('has(self.filesystem) == has(self.mountPath)', 'filesystem and mountPath must be set together'),
      cel(
        'has(self.size) || self.replicas.all(r, has(r.disk))',
        'a replica without a disk is a file in the pool: spec.size must say how big',
        { fieldPath: '.size' },
      ),
      cel('self.pool == oldSelf.pool', 'pool cannot be changed once the volume exists', { fieldPath: '.pool' }),
      // Growing is the agents' work (a pool file grows, its metadata moves, the new area is
      // synced); shrinking would cut off data a filesystem may use, so it is refused here.
      cel(
        'has(self.size) == has(oldSelf.size) && (!has(self.size) || quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0)',
        'size can grow but never shrink (and cannot be set or unset on an existing volume)',
        { fieldPath: '.size' },
      ),
      // The engines take these at `up`; changing them live (drbdadm adjust) is not implemented, so the
      // API server refuses the change instead of accepting a spec the engines do not follow.
      ...(['protocol', 'onIoError', 'splitBrain'] as const).map((f) =>
        cel(`self.${f} == oldSelf.${f}`, `${f} cannot be changed on an existing volume yet (no live adjust)`, {
          fieldPath: `.${f}`,
        }),
      ),
      ...(['verifyAlg', 'resyncRate', 'filesystem', 'mountPath'] as const).map((f) =>
        cel(
          `has(self.${f}) == has(oldSelf.${f}) && (!has(self.${f}) || self.${f} == oldSelf.${f})`,
          `${f} cannot be changed on an existing volume yet (no live adjust)`,
          { fieldPath: `.${f}` },
        ),
      ),
    ],
  });
export type ReplicatedVolumeSpec = z.infer<typeof ReplicatedVolumeSpec>;

export const PHASES = ['Pending', 'Creating', 'Syncing', 'Ready', 'Degraded', 'Failed', 'Deleting'] as const;
export type Phase = (typeof PHASES)[number];

export const ReplicaStatusSummary = z.object({
  node: z.string().describe('The node of this replica.'),
  role: z.string().optional().describe("The engine's role there: Primary, Secondary, or Unconfigured (no engine)."),
  connectionState: z
    .string()
    .optional()
    .describe("The engine's connection state, e.g. Connected, WFConnection, SyncSource."),
  diskState: z.string().optional().describe("The engine's own disk state, e.g. UpToDate, Inconsistent, Diskless."),
  syncProgress: z.number().min(0).max(100).optional().describe('Percent of the resync done, while one runs.'),
  outOfSyncBytes: z.number().int().min(0).optional().describe('Bytes marked out of sync with the peer (oos).'),
  sizeBytes: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe("The replicated device's size in bytes as this node's engine has it (grows after spec.size does)."),
  capacityBytes: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe("Bytes this node's disk can hold for the device now (a pool file grows to spec.size first)."),
  lastHeartbeatTime: z
    .string()
    .optional()
    .describe("When the node's agent last reported this replica (at a change, else at least every minute)."),
});
export type ReplicaStatusSummary = z.infer<typeof ReplicaStatusSummary>;

/**
 * The fence: at `epoch`, `node`'s data may lack writes that were acknowledged
 * without it, so it must never be promoted automatically. Written with the
 * resourceVersion read (the API server serialises it against a promotion) by the
 * Primary's agent before its engine acknowledges a write without the peer, or by
 * the controller in the same write that fails over away from `node`. Cleared by
 * the Primary's agent once the pair is Connected UpToDate/UpToDate again.
 */
export const Fence = z.object({
  node: z.string().describe('The fenced node: never promoted automatically while the fence stands.'),
  epoch: z.number().int().min(0).describe('The epoch at which it was fenced.'),
  by: z.string().describe('Who fenced: a node name (its agent) or tandem-controller.'),
  time: z.string().describe('When the fence was recorded.'),
  reason: z.string().max(1024).describe('Why, in one sentence.'),
});
export type Fence = z.infer<typeof Fence>;

/** The fence as one sentence (the Fenced event, whoever wrote it). */
export function describeFence(f: Fence): string {
  return `${f.node} is fenced by ${f.by} at epoch ${f.epoch}: ${f.reason}`;
}

export const FailoverRecord = z.object({
  from: z.string().describe('The lost Primary.'),
  to: z.string().describe('The node promoted.'),
  epoch: z.number().int().min(0).describe('The epoch the failover opened.'),
  time: z.string().describe('When the controller decided it.'),
  reason: z.string().max(1024).describe('Why, e.g. how long the node had not been Ready.'),
});
export type FailoverRecord = z.infer<typeof FailoverRecord>;

/**
 * Why the chosen Primary may change, the closed set (DESIGN.md §6: no cause, no
 * change): the first choice of a new volume, the user's spec.primary, an automatic
 * failover from a lost Primary, the operator's tandem.dev/force-primary, and (with
 * the CSI driver) ControllerPublish on a node.
 */
export const ROLE_CHANGE_REASONS = [
  'InitialPlacement',
  'PreferredPrimary',
  'Failover',
  'ForcePrimary',
  'CsiPublish',
] as const;
export type RoleChangeReason = (typeof ROLE_CHANGE_REASONS)[number];

export const RoleChange = z.object({
  from: z.string().optional().describe('The Primary before (absent for the first choice).'),
  to: z.string().describe('The Primary chosen.'),
  epoch: z.number().int().min(0).describe('The epoch the change opened.'),
  reason: z
    .enum(ROLE_CHANGE_REASONS)
    .describe(
      'The cause: InitialPlacement, PreferredPrimary (spec.primary), Failover, ForcePrimary (the annotation) or CsiPublish (the CSI driver attached it there).',
    ),
  time: z.string().describe('When the change was decided.'),
  message: z.string().max(1024).describe('The cause in a sentence.'),
});
export type RoleChange = z.infer<typeof RoleChange>;

/**
 * What the controller deleted to free the workload after a failover from `node` at
 * `epoch` (controller/decisions/workload.ts): the lost node's pods that mount the
 * volume and our driver's VolumeAttachments to that node. Written once per failover,
 * after the deletions; its presence is what keeps them from being done twice.
 */
export const WorkloadRelease = z.object({
  node: z.string().describe("The lost node (the failover's from, fenced)."),
  epoch: z.number().int().min(0).describe('The epoch of the failover that freed it.'),
  pods: z
    .array(z.string().max(253 * 2 + 1))
    .max(64)
    .describe('The pods force-deleted, as namespace/name.'),
  volumeAttachments: z.array(z.string().max(253)).max(64).describe('The VolumeAttachments deleted.'),
  at: z.string().describe('When the deletions were done.'),
});
export type WorkloadRelease = z.infer<typeof WorkloadRelease>;

export const ReplicatedVolumeStatus = z.object({
  phase: z
    .enum(PHASES)
    .optional()
    .describe(
      'A summary for people: Ready, Syncing, Degraded (a Primary without a healthy pair), Failed (see the Ready condition), Pending, Creating, Deleting.',
    ),
  primary: z.string().optional().describe('The node the controller has chosen as Primary.'),
  epoch: z
    .number()
    .int()
    .min(0)
    .optional()
    .describe('Increases at every change of Primary; agents refuse orders from an older epoch.'),
  port: z
    .number()
    .int()
    .min(1)
    .max(65535)
    .optional()
    .describe('The TCP port of the peer link, allocated by the controller (also the tandem.dev/port annotation).'),
  connection: z.string().optional().describe("The Primary's connection state (or the first replica's)."),
  disks: z.string().optional().describe('Disk states, Primary first: UpToDate/UpToDate.'),
  sync: z.string().optional().describe('Resync progress, e.g. 42.1%.'),
  replicas: z.array(ReplicaStatusSummary).optional().describe("Each node's replica as its agent last reported it."),
  fence: Fence.optional().describe(
    'Set while one node may lack acknowledged writes; cleared once the pair is Connected UpToDate/UpToDate again.',
  ),
  lastFailover: FailoverRecord.optional().describe('The last automatic failover or forced promotion.'),
  lastRoleChange: RoleChange.optional().describe(
    'The last change of the chosen Primary and its cause; the Primary never changes without one.',
  ),
  lastWorkloadRelease: WorkloadRelease.optional().describe(
    "After the last failover: the lost node's pods and VolumeAttachments the controller deleted once the fence was recorded.",
  ),
  conditions: z
    .array(Condition)
    .optional()
    .describe('Ready (with the reason it is not: FailoverBlocked, SplitBrain, DiskMissing, …) and the others.'),
  observedGeneration: z.number().int().min(0).optional().describe('The spec generation this status describes.'),
});
export type ReplicatedVolumeStatus = z.infer<typeof ReplicatedVolumeStatus>;

export const ObjectMeta = z
  .object({
    name: z.string(),
    namespace: z.string(),
    uid: z.string().optional(),
    generation: z.number().optional(),
    resourceVersion: z.string().optional(),
    deletionTimestamp: z.string().optional(),
    finalizers: z.array(z.string()).optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    ownerReferences: z
      .array(
        z
          .object({
            apiVersion: z.string(),
            kind: z.string(),
            name: z.string(),
            uid: z.string(),
            controller: z.boolean().optional(),
          })
          .loose(),
      )
      .optional(),
  })
  .loose();

export const ReplicatedVolume = z.object({
  apiVersion: z.string(),
  kind: z.string(),
  metadata: ObjectMeta,
  spec: ReplicatedVolumeSpec,
  status: ReplicatedVolumeStatus.optional(),
});
export type ReplicatedVolume = z.infer<typeof ReplicatedVolume>;
