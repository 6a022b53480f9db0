// The agent's decision for one pass over one replica: a pure function of a
// snapshot — the replica's spec, the engine's status (read once per pass), the
// disks and mount path as found, and, only when a decision needs it, the
// volume's status — returning the actions to run, in order, and the conditions
// to report once they have run. The executor (executor.ts) runs the actions and
// stops at the first that fails, reporting that action's failure condition
// instead; the agent (agent.ts) reads, plans, runs and reports, every few seconds
// and at every change, exactly as the controller's reconcile does.
//
// One role action per pass: after a promotion or demotion the engine's state has
// moved, so the steps that depend on it (rejoin, the consumer) wait for the next
// pass, which reads the status again (the agent runs it at once).
//
//   Down     → release the consumer, `down`, remove the config (it holds the secret)
//   disks    → refused by the disk checks (disk-check.ts) or missing: DisksFound=False,
//              nothing is touched; a new pool file is created first
//   Probe    → DisksFound=True and stop (the controller waits for both nodes)
//   Up       → config from spec + Secret; no engine: `create-md` (harmless when
//              metadata exists) and `up`; then one role step: `primary` (--force only
//              for a fresh disk's ordered initial sync or the operator's force),
//              fence + `resume-io` for a frozen Primary, `--force secondary` for a
//              Primary superseded while frozen, release + `secondary` otherwise
//   rejoin   → back together without a manual step (see rejoinActions)
//   consumer → on the Primary: mkfs once + mount; elsewhere the placeholder
import type { ConditionInput } from '../api/condition.ts';
import { CONDITIONS } from '../api/names.ts';
import type { Fence } from '../api/replicated-volume.ts';
import { deviceBytesFor, type ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import { internalFileBytesFor } from '../replication/metadata.ts';
import type { FileRemoval, PoolFileFacts } from './disk-check.ts';
import type { EngineStatusView } from './engine-client.ts';

/** The source the consumer's placeholder is mounted with (consumer.ts TOMBSTONE). */
export const PLACEHOLDER_SOURCE = 'tandem-not-primary';

/** What one pass knows. Everything is read before planning; nothing is read while planning. */
export type PassSnapshot = {
  spec: ReplicatedVolumeReplicaSpec;
  /** The newest epoch this agent has acted on for the replica (an older spec is never acted on). */
  epochSeen: number;
  /** The engine's status; undefined when no engine runs. */
  engine: EngineStatusView | undefined;
  /** Of spec.self's disk and meta-disk, those that do not exist. */
  missingDisks: readonly string[];
  /** The disk checks refused (disk-check.ts): nothing is touched, the reason is reported. */
  diskRefusal?: { reason: string; message: string } | undefined;
  /** Of a replica told Down: its pool file to remove, or why it stays (disk-check.ts backingFileRemoval). */
  removal?: FileRemoval | undefined;
  /** The disk is a new file in the volume's pool: create it (sparse) before anything else. */
  createFile?: { path: string; bytes: number } | undefined;
  /** The disk is an existing file in the volume's pool: its size and the room beside it (growing). */
  poolFile?: PoolFileFacts | undefined;
  /** The source mounted topmost at spec.mountPath (PLACEHOLDER_SOURCE for the placeholder); undefined: nothing. */
  mountSource: string | undefined;
  /**
   * Why spec.mountPath may not be used on this node (mount-path.ts); the agent then
   * plans as if it were unset (nothing is mounted or unmounted there) and reports this.
   */
  mountRefusal?: { reason: string; message: string } | undefined;
  /**
   * The volume's status, only when the plan asked for it (needVolume): a Secondary
   * that is apart from its peer decides from the fence and the volume's Primary.
   */
  volume?: VolumeView | undefined;
};

export type VolumeView = {
  primary?: string | undefined;
  epoch?: number | undefined;
  fence?: Fence | undefined;
  /** What each node's agent last reported: the peer's disk capacity decides when to resize. */
  replicas?: readonly { node: string; capacityBytes?: number | undefined }[] | undefined;
};

export type FailureCondition = { type: string; reason: string };

/** The closed set of things a pass does. */
export type Action =
  | { kind: 'release-consumer'; placeholder: boolean; failure: FailureCondition }
  | { kind: 'down'; failure: FailureCondition }
  | { kind: 'remove-config' }
  | { kind: 'write-config'; failure: FailureCondition }
  /**
   * Before a promotion or a demotion: the replica as the API server has it now must
   * still order this role at this epoch (the cache may lag); if not, the pass ends
   * and the next one decides on the newer order.
   */
  | { kind: 'confirm-order'; role: 'Primary' | 'Secondary'; epoch: number }
  | { kind: 'up'; failure: FailureCondition }
  | { kind: 'promote'; force: boolean; failure: FailureCondition }
  | { kind: 'demote'; force: boolean; failure: FailureCondition }
  /** Fence the peer in the volume's status, then `resume-io`; the failure depends on the fence's answer. */
  | { kind: 'fence-peer-and-resume' }
  | { kind: 'connect'; discardMyData: boolean }
  | { kind: 'outdate' }
  | { kind: 'lift-peer-fence' }
  | { kind: 'ensure-consumer'; device: string; failure: FailureCondition }
  /** `secondary` on a Secondary that still holds a block device (left by a forced demotion). */
  | { kind: 'release-device' }
  /** A file-backed replica's new backing file, sparse, in its pool's directory. */
  | { kind: 'create-backing-file'; path: string; bytes: number; failure: FailureCondition }
  /** A deleted volume's pool file, after the engine is down (only inside the pool directory). */
  | { kind: 'remove-backing-file'; path: string; directory: string; failure: FailureCondition }
  /** spec.sizeBytes went up: grow this node's disk to hold it (a pool file grows; `tandemadm grow-disk`). */
  | { kind: 'grow-disk'; bytes: number; failure: FailureCondition }
  /** Both disks hold spec.sizeBytes: grow the device and sync the new area (`tandemadm resize`, one node). */
  | { kind: 'resize'; bytes: number; failure: FailureCondition }
  /** A deleted volume's disk that looked like a pool file but is not this volume's: a warning, nothing removed. */
  | { kind: 'keep-backing-file'; message: string }
  | { kind: 'event'; type: 'Normal' | 'Warning'; reason: string; message: string };

export type ActionKind = Action['kind'];

export type Plan = {
  actions: Action[];
  /** Reported when every action ran (and, with no actions, as they are). */
  conditions: ConditionInput[];
  /** The decision needs the volume's status: read it and plan again with `volume`. */
  needVolume?: boolean;
  /** Why nothing is done (an older epoch). */
  ignored?: string;
};

const cond = (type: string, status: 'True' | 'False', reason: string, message: string): ConditionInput => ({
  type,
  status,
  reason,
  message,
});

const engineFailure = (reason: string): FailureCondition => ({ type: CONDITIONS.engineReady, reason });

export function planPass(s: PassSnapshot): Plan {
  const spec = s.spec;
  const e = s.engine;
  if (spec.epoch < s.epochSeen)
    return { actions: [], conditions: [], ignored: `spec epoch ${spec.epoch} is older than ${s.epochSeen}` };
  const split = e ? splitBrainCondition(e) : undefined;
  const withSplit = (c: ConditionInput[]) => (split ? [...c, split] : c);

  if (spec.engine === 'Down') {
    return {
      actions: [
        { kind: 'release-consumer', placeholder: false, failure: engineFailure('DownFailed') },
        ...(e ? [{ kind: 'down', failure: engineFailure('DownFailed') } as const] : []),
        { kind: 'remove-config' },
        ...removalActions(s.removal),
      ],
      conditions: [cond(CONDITIONS.engineReady, 'False', 'Down', 'The engine is down (the volume is being deleted)')],
    };
  }

  if (s.diskRefusal)
    return {
      actions: [],
      conditions: [cond(CONDITIONS.disksFound, 'False', s.diskRefusal.reason, s.diskRefusal.message)],
    };
  if (s.createFile)
    return {
      actions: [
        {
          kind: 'create-backing-file',
          path: s.createFile.path,
          bytes: s.createFile.bytes,
          failure: { type: CONDITIONS.disksFound, reason: 'CreateFailed' },
        },
      ],
      conditions: [
        cond(CONDITIONS.disksFound, 'False', 'Creating', `Creating ${s.createFile.path} in the volume's pool (sparse)`),
      ],
    };
  if (s.missingDisks.length > 0) {
    const m = s.missingDisks;
    return {
      actions: [],
      conditions: [
        cond(
          CONDITIONS.disksFound,
          'False',
          'DiskMissing',
          `${m.join(' and ')} ${m.length > 1 ? 'do' : 'does'} not exist on node ${spec.node}; nothing was touched`,
        ),
      ],
    };
  }
  const disks = cond(CONDITIONS.disksFound, 'True', 'Found', `${spec.self.disk} and meta-disk ${spec.self.metaDisk}`);
  if (spec.engine === 'Probe')
    return {
      actions: [],
      conditions: [
        disks,
        cond(CONDITIONS.engineReady, 'False', 'Probing', 'Waiting for the controller to start the engines'),
      ],
    };

  const config: Action = { kind: 'write-config', failure: engineFailure('SecretMissing') };
  if (!e) {
    return {
      actions: [config, { kind: 'up', failure: engineFailure('EngineFailed') }],
      conditions: [disks, cond(CONDITIONS.engineReady, 'False', 'Starting', 'The engine is starting')],
    };
  }

  const role = roleActions(spec, e);
  if (role.length > 0) {
    return {
      actions: [config, { kind: 'confirm-order', role: spec.role, epoch: spec.epoch }, ...role],
      conditions: withSplit([disks, cond(CONDITIONS.engineReady, 'True', 'Running', `Engine runs as ${spec.role}`)]),
    };
  }

  const rejoin = rejoinActions(spec, e, s.volume);
  if (rejoin === 'needVolume') return { actions: [], conditions: [], needVolume: true };
  const grow = growPlan(spec, e, s.poolFile, s.volume);
  if (grow === 'needVolume') return { actions: [], conditions: [], needVolume: true };
  const consumer = s.mountRefusal
    ? { actions: [], condition: cond(CONDITIONS.mounted, 'False', s.mountRefusal.reason, s.mountRefusal.message) }
    : consumerPlan(spec, e, s.mountSource);
  return {
    actions: [config, ...rejoin, ...grow.actions, ...consumer.actions],
    conditions: withSplit([
      disks,
      cond(CONDITIONS.engineReady, 'True', 'Running', `Engine runs as ${spec.role}`),
      consumer.condition,
      ...(grow.condition ? [grow.condition] : []),
    ]),
  };
}

/**
 * Growing (spec.sizeBytes went up; it never goes down). Each node grows its own disk
 * first (`grow-disk`: a pool file grows and its internal metadata moves, in any role,
 * under writes); then the node whose name sorts first, once both disks hold the new
 * size, Connected with both disks UpToDate, runs `resize`: the device grows on both
 * and the new area is synced. A pool file grows only if its filesystem has the room.
 */
function growPlan(
  spec: ReplicatedVolumeReplicaSpec,
  e: EngineStatusView,
  poolFile: PoolFileFacts | undefined,
  volume: VolumeView | undefined,
): { actions: Action[]; condition?: ConditionInput } | 'needVolume' {
  if (spec.sizeBytes === undefined || e.disk === 'Diskless') return { actions: [] };
  const want = deviceBytesFor(spec.sizeBytes);
  const sized = (status: 'True' | 'False', reason: string, message: string) =>
    cond(CONDITIONS.sized, status, reason, message);
  if (e.size >= want) return { actions: [], condition: sized('True', 'AtSize', `The device holds ${e.size} bytes`) };
  const capacity = e.capacity ?? e.size;
  if (capacity < want) {
    if (poolFile?.freeBytes !== undefined) {
      const need = Math.max(0, internalFileBytesFor(Math.max(want, poolFile.bytes)) - poolFile.bytes);
      if (need > poolFile.freeBytes)
        return {
          actions: [],
          condition: sized(
            'False',
            'NoSpace',
            `Growing ${spec.self.disk} to hold ${want} bytes needs ${need} more bytes; its filesystem has ${poolFile.freeBytes} free`,
          ),
        };
    }
    return {
      actions: [{ kind: 'grow-disk', bytes: want, failure: { type: CONDITIONS.sized, reason: 'GrowFailed' } }],
      condition: sized('False', 'Growing', `Growing the disk to hold ${want} bytes (the device has ${e.size})`),
    };
  }
  const waiting = (why: string) => ({
    actions: [],
    condition: sized('False', 'Growing', `This disk holds ${want} bytes; the device grows when ${why}`),
  });
  if (spec.node > spec.peer.node) return waiting(`${spec.peer.node} runs resize`);
  if (e.cstate !== 'Connected' || e.disk !== 'UpToDate' || e.peerDisk !== 'UpToDate')
    return waiting(`the pair is Connected and UpToDate/UpToDate (it is ${e.cstate} ${e.disk}/${e.peerDisk})`);
  if (!volume) return 'needVolume';
  const peer = volume.replicas?.find((r) => r.node === spec.peer.node)?.capacityBytes;
  if (peer === undefined || peer < want)
    return waiting(`${spec.peer.node}'s disk holds it too (it reports ${peer ?? 'nothing yet'})`);
  return {
    actions: [{ kind: 'resize', bytes: want, failure: { type: CONDITIONS.sized, reason: 'ResizeFailed' } }],
    condition: sized('False', 'Growing', `Both disks hold ${want} bytes: growing the device`),
  };
}

/** The pool file goes once the engine is down (the actions before it succeeded: the pass ends at a failure). */
function removalActions(r: FileRemoval | undefined): Action[] {
  if (r?.kind === 'remove')
    return [
      {
        kind: 'remove-backing-file',
        path: r.path,
        directory: r.directory,
        failure: engineFailure('RemoveFailed'),
      },
    ];
  if (r?.kind === 'keep') return [{ kind: 'keep-backing-file', message: r.message }];
  return [];
}

/** The one role step the engine needs to match the spec, if any. */
function roleActions(spec: ReplicatedVolumeReplicaSpec, e: EngineStatusView): Action[] {
  if (spec.role === 'Primary' && e.role !== 'Primary') {
    const initial = spec.initialSync && e.disk === 'Inconsistent';
    const force = initial || spec.forcePrimary;
    return [
      { kind: 'promote', force, failure: engineFailure('PromotionRefused') },
      {
        kind: 'event',
        type: spec.forcePrimary ? 'Warning' : 'Normal',
        reason: 'Promoted',
        message: `${spec.node} is Primary (epoch ${spec.epoch}${spec.forcePrimary ? ', forced by the operator: writes only the peer had are given up' : initial ? ', initial full sync' : ''})`,
      },
    ];
  }
  // Frozen by fencing and the handler's answer did not thaw it (the API was
  // unreachable, or the agent was away): fence now, then resume.
  if (spec.role === 'Primary' && e.suspended) return [{ kind: 'fence-peer-and-resume' }];
  if (spec.role === 'Secondary' && e.role === 'Primary' && e.suspended) {
    // Superseded while frozen (the other node was promoted at a newer epoch): the
    // frozen writes fail, they were never acknowledged; the consumer goes next pass.
    return [
      { kind: 'demote', force: true, failure: engineFailure('DemotionRefused') },
      {
        kind: 'event',
        type: 'Warning',
        reason: 'Superseded',
        message: `${spec.node} was Primary but ${spec.peer.node} took over at epoch ${spec.epoch}; its frozen, unacknowledged writes failed and it is Secondary now`,
      },
    ];
  }
  if (spec.role === 'Secondary' && e.role === 'Primary') {
    return [
      { kind: 'release-consumer', placeholder: true, failure: engineFailure('DemotionRefused') },
      { kind: 'demote', force: false, failure: engineFailure('DemotionRefused') },
      { kind: 'event', type: 'Normal', reason: 'Demoted', message: `${spec.node} is Secondary (epoch ${spec.epoch})` },
    ];
  }
  return [];
}

/**
 * Back together without a manual step. StandAlone after a refused connect: the
 * Primary (the survivor) connects again; a Secondary whose peer is the volume's
 * Primary at our epoch or later connects with --discard-my-data after a split
 * brain (it was the old Primary; its blocks are saved to discarded-data-dir). On
 * the Primary, Connected with an UpToDate peer, a fence on the peer is lifted. A
 * Secondary apart from its peer and fenced in the API outdates its own disk
 * (DRBD's fence-peer outdates the peer: the engine then refuses a promotion).
 */
function rejoinActions(
  spec: ReplicatedVolumeReplicaSpec,
  e: EngineStatusView,
  volume: VolumeView | undefined,
): Action[] | 'needVolume' {
  if (e.role === 'Primary' && spec.role === 'Primary') {
    if (e.cstate === 'StandAlone') return [{ kind: 'connect', discardMyData: false }];
    if (e.cstate === 'Connected' && e.peerDisk === 'UpToDate' && e.disk === 'UpToDate' && !e.suspended)
      return [{ kind: 'lift-peer-fence' }];
    return [];
  }
  if (e.role !== 'Secondary' || spec.role !== 'Secondary') return [];
  const apart = e.cstate === 'StandAlone' || e.cstate === 'WFConnection' || e.cstate === 'Unconnected';
  if (!apart) return [];
  if (!volume) return 'needVolume';
  const out: Action[] = [];
  const f = volume.fence;
  if (f?.node === spec.node && (e.disk === 'UpToDate' || e.disk === 'Consistent')) {
    out.push(
      { kind: 'outdate' },
      {
        kind: 'event',
        type: 'Warning',
        reason: 'Outdated',
        message: `${spec.node}'s disk is Outdated: ${f.by} fenced it at epoch ${f.epoch} (${f.reason})`,
      },
    );
  }
  if (e.cstate !== 'StandAlone') return out;
  if (volume.primary !== spec.peer.node || (volume.epoch ?? 0) < spec.epoch) return out;
  if (e.lastDecision?.decision.startsWith('split-brain')) {
    out.push(
      { kind: 'connect', discardMyData: true },
      {
        kind: 'event',
        type: 'Warning',
        reason: 'DiscardingOwnChanges',
        message: `${spec.node} diverged from the Primary ${spec.peer.node} (split brain after a change of Primary, epoch ${spec.epoch}); its own changes are discarded and saved under /var/lib/tandem/discarded/${spec.node}, then it resyncs as SyncTarget`,
      },
    );
  } else out.push({ kind: 'connect', discardMyData: false });
  return out;
}

/** On the Primary: filesystem (once) and mount. Elsewhere: the placeholder, and no block device left. */
function consumerPlan(
  spec: ReplicatedVolumeReplicaSpec,
  e: EngineStatusView,
  mountSource: string | undefined,
): { actions: Action[]; condition: ConditionInput } {
  const mounted = mountSource !== undefined && mountSource !== PLACEHOLDER_SOURCE;
  if (e.role === 'Primary' && spec.role === 'Primary' && spec.filesystem && spec.mountPath) {
    const device = e.attach?.device;
    if (!device) {
      const why = e.attach?.lastError ?? e.attach?.reason ?? 'the engine reports no attached device';
      return {
        actions: [],
        condition: cond(CONDITIONS.mounted, 'False', 'NoDevice', `No block device for the Primary's export: ${why}`),
      };
    }
    return {
      actions:
        mountSource === device
          ? []
          : [{ kind: 'ensure-consumer', device, failure: { type: CONDITIONS.mounted, reason: 'MountFailed' } }],
      condition: cond(CONDITIONS.mounted, 'True', 'Mounted', `${device} (${spec.filesystem}) on ${spec.mountPath}`),
    };
  }
  const actions: Action[] = [];
  if (e.role !== 'Primary') {
    // Not Primary: the mount path holds a read-only placeholder. A filesystem left
    // mounted by a forced demotion (a superseded Primary whose application still held
    // files; its I/O fails) goes as soon as it is free, every pass, never lazily: a
    // process reopening a path would write into the directory underneath.
    if (spec.mountPath && mountSource !== PLACEHOLDER_SOURCE)
      actions.push({
        kind: 'release-consumer',
        placeholder: true,
        failure: { type: CONDITIONS.mounted, reason: mounted ? 'StaleMount' : 'PlaceholderFailed' },
      });
    if (e.attach?.device) actions.push({ kind: 'release-device' });
  }
  return {
    actions,
    condition: cond(
      CONDITIONS.mounted,
      'False',
      spec.mountPath ? 'NotPrimary' : 'NoMountPath',
      spec.mountPath
        ? 'Mounted only on the Primary; here the mount path holds a read-only placeholder'
        : 'spec.mountPath is not set',
    ),
  };
}

/**
 * SplitBrain from the engine's last connect decision: True while the pair stays apart
 * (StandAlone, DRBD's answer when no after-sb policy resolved it), False once connected.
 */
export function splitBrainCondition(e: EngineStatusView): ConditionInput {
  const d = e.lastDecision;
  if (!d?.decision.startsWith('split-brain'))
    return cond(
      CONDITIONS.splitBrain,
      'False',
      'NoSplitBrain',
      'The generation identifiers agreed at the last connect',
    );
  if (e.cstate === 'StandAlone') {
    return cond(
      CONDITIONS.splitBrain,
      'True',
      'SplitBrain',
      `Split brain detected (${d.rule}); the pair stays StandAlone until resolved: tandemadm -- --discard-my-data connect on the victim`,
    );
  }
  const saved = e.discardedBlocksSavedTo
    ? `; this node's own diverged blocks were saved to ${e.discardedBlocksSavedTo}`
    : '';
  return cond(CONDITIONS.splitBrain, 'False', 'Resolved', `Split brain resolved at connect: ${d.rule}${saved}`);
}
