import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import type { EngineStatusView } from './engine-client.ts';
import { type PassSnapshot, PLACEHOLDER_SOURCE, type Plan, planPass } from './plan.ts';

const spec = (o: Partial<ReplicatedVolumeReplicaSpec> = {}): ReplicatedVolumeReplicaSpec => ({
  volume: 'db',
  engine: 'Up',
  resource: 'ns.db',
  node: 'master',
  role: 'Secondary',
  initialSync: false,
  forcePrimary: false,
  epoch: 3,
  port: 7789,
  minor: 0,
  self: { node: 'master', address: '10.0.0.1', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
  peer: { node: 'backup', address: '10.0.0.2', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
  protocol: 'C',
  onIoError: 'detach',
  splitBrain: { afterSb0pri: 'disconnect', afterSb1pri: 'disconnect', afterSb2pri: 'disconnect' },
  pool: 'tutorial',
  secretName: 'db-peer',
  filesystem: 'xfs',
  mountPath: '/mydata/db',
  ...o,
});

const engine = (o: Partial<EngineStatusView> = {}): EngineStatusView => ({
  resource: 'ns.db',
  role: 'Secondary',
  peerRole: 'Primary',
  cstate: 'Connected',
  disk: 'UpToDate',
  peerDisk: 'UpToDate',
  size: 1 << 30,
  counters: {},
  oosBytes: 0,
  uuids: { current: 'A1B2C3D4E5F60708' },
  ...o,
});

const snap = (o: Partial<PassSnapshot> = {}): PassSnapshot => ({
  spec: spec(),
  epochSeen: 0,
  engine: engine(),
  missingDisks: [],
  mountSource: PLACEHOLDER_SOURCE,
  ...o,
});

/** The plan as a line per action (events by reason) and the conditions as TYPE=STATUS/REASON. */
const summary = (p: Plan) => ({
  actions: p.actions.map((a) =>
    a.kind === 'event'
      ? `event ${a.reason}`
      : a.kind === 'promote' || a.kind === 'demote'
        ? `${a.kind}${a.force ? ' --force' : ''}`
        : a.kind === 'connect'
          ? `connect${a.discardMyData ? ' --discard-my-data' : ''}`
          : a.kind === 'release-consumer'
            ? `release-consumer${a.placeholder ? ' (placeholder)' : ''}`
            : a.kind,
  ),
  conditions: p.conditions.map((c) => `${c.type}=${c.status}/${c.reason}`),
  ...(p.needVolume ? { needVolume: true } : {}),
  ...(p.ignored ? { ignored: true } : {}),
});

const primaryEngine = (o: Partial<EngineStatusView> = {}) =>
  engine({
    role: 'Primary',
    peerRole: 'Secondary',
    attach: { method: 'fuse', reason: 'no nbd', device: '/dev/loop7', lastError: null },
    ...o,
  });

test.each<[string, Partial<PassSnapshot>, ReturnType<typeof summary>]>([
  [
    'a spec from an older epoch than one acted on is ignored',
    { spec: spec({ epoch: 2 }), epochSeen: 3 },
    { actions: [], conditions: [], ignored: true },
  ],
  [
    'Down: consumer released, engine down, config removed',
    { spec: spec({ engine: 'Down' }) },
    {
      actions: ['release-consumer', 'down', 'remove-config'],
      conditions: ['EngineReady=False/Down'],
    },
  ],
  [
    'Down with no engine left: nothing to take down',
    { spec: spec({ engine: 'Down' }), engine: undefined },
    { actions: ['release-consumer', 'remove-config'], conditions: ['EngineReady=False/Down'] },
  ],
  [
    'Down of a file-backed replica: its pool file goes last, after the engine is down',
    {
      spec: spec({ engine: 'Down' }),
      removal: { kind: 'remove', path: '/var/lib/tandem/pools/p/ns.db.img', directory: '/var/lib/tandem/pools/p' },
    },
    {
      actions: ['release-consumer', 'down', 'remove-config', 'remove-backing-file'],
      conditions: ['EngineReady=False/Down'],
    },
  ],
  [
    'Down of a replica on a granted device: the data stays',
    { spec: spec({ engine: 'Down' }), removal: { kind: 'none', why: 'a device' } },
    { actions: ['release-consumer', 'down', 'remove-config'], conditions: ['EngineReady=False/Down'] },
  ],
  [
    "Down of a replica whose disk is not its pool's file: kept, with a warning",
    { spec: spec({ engine: 'Down' }), engine: undefined, removal: { kind: 'keep', message: 'not ours' } },
    { actions: ['release-consumer', 'remove-config', 'keep-backing-file'], conditions: ['EngineReady=False/Down'] },
  ],
  [
    'a missing disk: nothing is touched',
    { missingDisks: ['/dev/sdb2'], engine: undefined },
    { actions: [], conditions: ['DisksFound=False/DiskMissing'] },
  ],
  [
    'Probe: disks found, no engine started',
    { spec: spec({ engine: 'Probe' }), engine: undefined },
    { actions: [], conditions: ['DisksFound=True/Found', 'EngineReady=False/Probing'] },
  ],
  [
    'no engine: config, then create-md + up; the role waits for the next pass',
    { spec: spec({ role: 'Primary' }), engine: undefined },
    { actions: ['write-config', 'up'], conditions: ['DisksFound=True/Found', 'EngineReady=False/Starting'] },
  ],
  [
    'ordered Primary, UpToDate Secondary: promote (no force)',
    { spec: spec({ role: 'Primary' }) },
    {
      actions: ['write-config', 'confirm-order', 'promote', 'event Promoted'],
      conditions: ['DisksFound=True/Found', 'EngineReady=True/Running', 'SplitBrain=False/NoSplitBrain'],
    },
  ],
  [
    'the initial sync of a fresh Inconsistent disk: promote --force',
    { spec: spec({ role: 'Primary', initialSync: true }), engine: engine({ disk: 'Inconsistent' }) },
    {
      actions: ['write-config', 'confirm-order', 'promote --force', 'event Promoted'],
      conditions: ['DisksFound=True/Found', 'EngineReady=True/Running', 'SplitBrain=False/NoSplitBrain'],
    },
  ],
  [
    'initialSync on a disk that is no longer Inconsistent: no force',
    { spec: spec({ role: 'Primary', initialSync: true }), engine: engine({ disk: 'Outdated' }) },
    {
      actions: ['write-config', 'confirm-order', 'promote', 'event Promoted'],
      conditions: ['DisksFound=True/Found', 'EngineReady=True/Running', 'SplitBrain=False/NoSplitBrain'],
    },
  ],
  [
    "the operator's force: promote --force whatever the disk",
    { spec: spec({ role: 'Primary', forcePrimary: true }), engine: engine({ disk: 'Outdated' }) },
    {
      actions: ['write-config', 'confirm-order', 'promote --force', 'event Promoted'],
      conditions: ['DisksFound=True/Found', 'EngineReady=True/Running', 'SplitBrain=False/NoSplitBrain'],
    },
  ],
  [
    'a frozen Primary, still ordered Primary: fence the peer, then resume',
    { spec: spec({ role: 'Primary' }), engine: primaryEngine({ suspended: true, cstate: 'WFConnection' }) },
    {
      actions: ['write-config', 'confirm-order', 'fence-peer-and-resume'],
      conditions: ['DisksFound=True/Found', 'EngineReady=True/Running', 'SplitBrain=False/NoSplitBrain'],
    },
  ],
  [
    'a frozen Primary superseded (ordered Secondary): --force secondary, the frozen writes fail',
    { engine: primaryEngine({ suspended: true, cstate: 'WFConnection' }) },
    {
      actions: ['write-config', 'confirm-order', 'demote --force', 'event Superseded'],
      conditions: ['DisksFound=True/Found', 'EngineReady=True/Running', 'SplitBrain=False/NoSplitBrain'],
    },
  ],
  [
    'a planned demotion: the consumer goes first, then secondary',
    { engine: primaryEngine(), mountSource: '/dev/loop7' },
    {
      actions: ['write-config', 'confirm-order', 'release-consumer (placeholder)', 'demote', 'event Demoted'],
      conditions: ['DisksFound=True/Found', 'EngineReady=True/Running', 'SplitBrain=False/NoSplitBrain'],
    },
  ],
  [
    'the Primary with its device attached and nothing mounted: mkfs (once) + mount',
    { spec: spec({ role: 'Primary' }), engine: primaryEngine(), mountSource: PLACEHOLDER_SOURCE },
    {
      actions: ['write-config', 'lift-peer-fence', 'ensure-consumer'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=True/Mounted',
        'SplitBrain=False/NoSplitBrain',
      ],
    },
  ],
  [
    'the disk checks refused (a path the pool does not grant): nothing at all, the reason reported',
    {
      engine: undefined,
      diskRefusal: { reason: 'NotGranted', message: 'StoragePool p does not grant /dev/sda on node master' },
    },
    { actions: [], conditions: ['DisksFound=False/NotGranted'] },
  ],
  [
    'a new file in the pool: created (sparse) before anything else',
    { engine: undefined, createFile: { path: '/var/lib/tandem/pools/p/ns.db.img', bytes: 1 << 30 } },
    { actions: ['create-backing-file'], conditions: ['DisksFound=False/Creating'] },
  ],
  [
    'the Primary with a refused mount path (the agent removed it from the spec): nothing mounted, the reason reported',
    {
      spec: spec({ role: 'Primary', mountPath: undefined, filesystem: undefined }),
      engine: primaryEngine(),
      mountSource: undefined,
      mountRefusal: { reason: 'MountPathRefused', message: '/etc is not below the mount root /mydata' },
    },
    {
      actions: ['write-config', 'lift-peer-fence'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=False/MountPathRefused',
        'SplitBrain=False/NoSplitBrain',
      ],
    },
  ],
  [
    'the Primary mounted already: only the (usual) look at a fence on its peer',
    { spec: spec({ role: 'Primary' }), engine: primaryEngine(), mountSource: '/dev/loop7' },
    {
      actions: ['write-config', 'lift-peer-fence'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=True/Mounted',
        'SplitBrain=False/NoSplitBrain',
      ],
    },
  ],
  [
    'the Primary without a device yet: Mounted=False NoDevice, nothing forced',
    {
      spec: spec({ role: 'Primary' }),
      engine: primaryEngine({ attach: { method: 'fuse', reason: 'attaching', device: null, lastError: null } }),
    },
    {
      actions: ['write-config', 'lift-peer-fence'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=False/NoDevice',
        'SplitBrain=False/NoSplitBrain',
      ],
    },
  ],
  [
    'a StandAlone Primary connects again',
    { spec: spec({ role: 'Primary' }), engine: primaryEngine({ cstate: 'StandAlone' }), mountSource: '/dev/loop7' },
    {
      actions: ['write-config', 'connect'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=True/Mounted',
        'SplitBrain=False/NoSplitBrain',
      ],
    },
  ],
  [
    'a Secondary apart from its peer asks for the volume status before deciding',
    { engine: engine({ cstate: 'WFConnection', peerRole: 'Unknown', peerDisk: 'DUnknown' }) },
    { actions: [], conditions: [], needVolume: true },
  ],
  [
    'fenced in the API while apart: outdate its own disk',
    {
      engine: engine({ cstate: 'WFConnection', peerRole: 'Unknown', peerDisk: 'DUnknown' }),
      volume: {
        primary: 'backup',
        epoch: 3,
        fence: { node: 'master', epoch: 3, by: 'backup', time: '2026-12-06T00:00:00Z', reason: 'lost' },
      },
    },
    {
      actions: ['write-config', 'outdate', 'event Outdated'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=False/NotPrimary',
        'SplitBrain=False/NoSplitBrain',
      ],
    },
  ],
  [
    'the old Primary after a split brain, its peer the Primary at its epoch: --discard-my-data connect',
    {
      engine: engine({
        cstate: 'StandAlone',
        disk: 'Outdated',
        lastDecision: { decision: 'split-brain', rule: 'both changed' },
      }),
      volume: { primary: 'backup', epoch: 3 },
    },
    {
      actions: ['write-config', 'connect --discard-my-data', 'event DiscardingOwnChanges'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=False/NotPrimary',
        'SplitBrain=True/SplitBrain',
      ],
    },
  ],
  [
    'a split brain while the volume names this node Primary (or an older epoch): never discard its data',
    {
      engine: engine({ cstate: 'StandAlone', lastDecision: { decision: 'split-brain', rule: 'both changed' } }),
      volume: { primary: 'backup', epoch: 2 },
    },
    {
      actions: ['write-config'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=False/NotPrimary',
        'SplitBrain=True/SplitBrain',
      ],
    },
  ],
  [
    'a Secondary with a filesystem left mounted (forced demotion): unmounted for the placeholder',
    {
      mountSource: '/dev/loop7',
      engine: engine({ attach: { method: 'fuse', reason: 'x', device: '/dev/loop7', lastError: null } }),
    },
    {
      actions: ['write-config', 'release-consumer (placeholder)', 'release-device'],
      conditions: [
        'DisksFound=True/Found',
        'EngineReady=True/Running',
        'Mounted=False/NotPrimary',
        'SplitBrain=False/NoSplitBrain',
      ],
    },
  ],
])('%s', (_name, given, want) => {
  expect(summary(planPass(snap(given)))).toEqual(want);
});

test('a Connected Primary with an UpToDate peer lifts the fence; not while frozen or syncing', () => {
  const lifts = (e: EngineStatusView) =>
    planPass(snap({ spec: spec({ role: 'Primary' }), engine: e, mountSource: '/dev/loop7' })).actions.some(
      (a) => a.kind === 'lift-peer-fence',
    );
  expect(lifts(primaryEngine())).toBe(true);
  expect(lifts(primaryEngine({ peerDisk: 'Inconsistent', cstate: 'SyncSource' }))).toBe(false);
  expect(lifts(primaryEngine({ suspended: true }))).toBe(false);
});

test('at most one role action per pass, and never a promotion and a demotion together, whatever the engine says', () => {
  const roles = ['Primary', 'Secondary'] as const;
  const cstates = ['Connected', 'WFConnection', 'StandAlone', 'SyncSource', 'SyncTarget'];
  const disks = ['UpToDate', 'Outdated', 'Inconsistent', 'Consistent'];
  for (const ordered of roles)
    for (const role of roles)
      for (const cstate of cstates)
        for (const disk of disks)
          for (const suspended of [false, true])
            for (const volume of [undefined, { primary: 'backup', epoch: 3 }, { primary: 'master', epoch: 3 }]) {
              const p = planPass(
                snap({ spec: spec({ role: ordered }), engine: engine({ role, cstate, disk, suspended }), volume }),
              );
              const kinds = p.actions.map((a) => a.kind);
              const roleSteps = kinds.filter((k) => k === 'promote' || k === 'demote');
              expect(roleSteps.length).toBeLessThanOrEqual(1);
              // The plan moves the engine only toward the ordered role.
              if (kinds.includes('promote')) expect(ordered).toBe('Primary');
              if (kinds.includes('demote')) expect(ordered).toBe('Secondary');
              // A Primary's data is never discarded.
              if (kinds.includes('connect') && p.actions.some((a) => a.kind === 'connect' && a.discardMyData))
                expect({ ordered, role }).toEqual({ ordered: 'Secondary', role: 'Secondary' });
            }
});

describe('growing: spec.sizeBytes went up', () => {
  const GiB = 1 << 30;
  const sized = { sizeBytes: 2 * GiB, mountPath: undefined, filesystem: undefined };
  const master = spec(sized);
  // backup sorts first: it is the one that runs resize.
  const backup = spec({ ...sized, node: 'backup', self: spec().peer, peer: spec().self });
  const grown = (o: Partial<PassSnapshot>, s = master) => summary(planPass(snap({ spec: s, ...o })));
  const poolFile = { bytes: GiB + (1 << 20), freeBytes: 10 * GiB };

  test('each node grows its own disk first, in any role and connection state', () => {
    const cases: [ReplicatedVolumeReplicaSpec, EngineStatusView][] = [
      [master, engine()],
      [spec({ ...sized, role: 'Primary' }), primaryEngine()],
      [backup, engine({ cstate: 'WFConnection', peerDisk: 'DUnknown' })],
    ];
    for (const [s, e] of cases)
      expect(grown({ engine: { ...e, capacity: GiB }, poolFile, volume: {} }, s).actions).toContain('grow-disk');
    expect(grown({ engine: engine({ capacity: GiB }), poolFile }).conditions).toContain('Sized=False/Growing');
  });

  test('a pool file whose filesystem lacks the room is not touched', () => {
    const p = grown({ engine: engine({ capacity: GiB }), poolFile: { bytes: GiB, freeBytes: GiB / 2 } });
    expect(p.actions).toEqual(['write-config']);
    expect(p.conditions).toContain('Sized=False/NoSpace');
  });

  test('the node that sorts first resizes once both disks hold the size and the pair is in sync', () => {
    const ready = engine({ capacity: 2 * GiB });
    const peerHolds = { replicas: [{ node: 'master', capacityBytes: 2 * GiB }] };
    expect(grown({ engine: ready, poolFile }, backup)).toMatchObject({ needVolume: true });
    expect(grown({ engine: ready, poolFile, volume: peerHolds }, backup).actions).toEqual(['write-config', 'resize']);
    // Not before the peer's disk holds it, not while apart or syncing, never from the other node.
    const peerShort = { replicas: [{ node: 'master', capacityBytes: GiB }] };
    expect(grown({ engine: ready, poolFile, volume: peerShort }, backup).actions).toEqual(['write-config']);
    const syncing = engine({ capacity: 2 * GiB, cstate: 'SyncSource' });
    expect(grown({ engine: syncing, volume: peerHolds }, backup).actions).toEqual(['write-config']);
    expect(grown({ engine: ready, volume: peerHolds }, master).actions).toEqual(['write-config']);
  });

  test('at the size: nothing to do, Sized=True', () => {
    expect(grown({ engine: engine({ size: 2 * GiB, capacity: 2 * GiB }), poolFile })).toEqual({
      actions: ['write-config'],
      conditions: expect.arrayContaining(['Sized=True/AtSize']),
    });
  });
});
