import type { ReplicatedVolumeReplicaStatus } from '../../api/replicated-volume-replica.ts';
import { aggregateStatus, eventsBetween, sameStatus, type StatusInput } from './status.ts';
import { decideRoles } from './roles.ts';

const now = new Date('2026-11-25T12:00:00Z');
const beat = new Date(now.getTime() - 2000).toISOString();
const rs = (
  s: Partial<ReplicatedVolumeReplicaStatus>,
): { status: ReplicatedVolumeReplicaStatus; generation: number } => ({
  status: { lastHeartbeatTime: beat, ...s },
  generation: 1,
});
const connected = (role: string) =>
  rs({ role, connectionState: 'Connected', diskState: 'UpToDate', peerDiskState: 'UpToDate', outOfSyncBytes: 0 });

function input(replicas: [string, ReturnType<typeof rs>][], o: Partial<StatusInput> = {}): StatusInput {
  const observed = replicas.map(([node, r]) => ({
    node,
    role: r.status.role,
    diskState: r.status.diskState,
    connectionState: r.status.connectionState,
  }));
  return {
    generation: 2,
    previous: undefined,
    nodes: ['master', 'backup'],
    replicas: new Map(replicas),
    port: 7789,
    deleting: false,
    now,
    roles: decideRoles({ nodes: ['master', 'backup'], preferred: 'master', chosen: 'master', epoch: 1, observed }),
    ...o,
  };
}

test('Connected UpToDate/UpToDate with a Primary is Ready, Primary first in the columns', () => {
  const s = aggregateStatus(
    input([
      ['master', connected('Primary')],
      ['backup', connected('Secondary')],
    ]),
  );
  expect(s).toMatchObject({
    phase: 'Ready',
    primary: 'master',
    epoch: 1,
    connection: 'Connected',
    disks: 'UpToDate/UpToDate',
    observedGeneration: 2,
  });
  expect(s.sync).toBeUndefined();
  expect(s.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
    status: 'True',
    reason: 'Replicated',
    observedGeneration: 2,
  });
});

test.each<
  [
    string,
    [string, ReturnType<typeof rs>][],
    Partial<StatusInput>,
    { phase: string; reason: string; sync?: string; disks?: string },
  ]
>([
  [
    'a sync in progress',
    [
      ['master', rs({ role: 'Primary', connectionState: 'SyncSource', diskState: 'UpToDate', syncProgress: 42.5 })],
      [
        'backup',
        rs({ role: 'Secondary', connectionState: 'SyncTarget', diskState: 'Inconsistent', syncProgress: 42.5 }),
      ],
    ],
    {},
    { phase: 'Syncing', reason: 'Syncing', sync: '42.5%', disks: 'UpToDate/Inconsistent' },
  ],
  [
    'a missing disk on one node',
    [
      [
        'master',
        rs({
          role: 'Unconfigured',
          conditions: [
            {
              type: 'DisksFound',
              status: 'False',
              reason: 'DiskMissing',
              message: '/dev/sdc1 does not exist',
              lastTransitionTime: beat,
            },
          ],
        }),
      ],
      ['backup', rs({ role: 'Unconfigured' })],
    ],
    {},
    { phase: 'Failed', reason: 'DiskMissing' },
  ],
  [
    'a split brain left StandAlone',
    [
      [
        'master',
        rs({
          role: 'Primary',
          connectionState: 'StandAlone',
          diskState: 'UpToDate',
          conditions: [
            {
              type: 'SplitBrain',
              status: 'True',
              reason: 'SplitBrain',
              message: 'Split brain detected',
              lastTransitionTime: beat,
            },
          ],
        }),
      ],
      ['backup', rs({ role: 'Secondary', connectionState: 'StandAlone', diskState: 'UpToDate' })],
    ],
    {},
    { phase: 'Failed', reason: 'SplitBrain' },
  ],
  [
    'an unknown node',
    [],
    { placementFailure: { reason: 'NodeNotFound', message: 'node nowhere does not exist' }, roles: undefined },
    { phase: 'Failed', reason: 'NodeNotFound' },
  ],
  ['no report yet', [], {}, { phase: 'Pending', reason: 'WaitingForAgents' }],
  [
    'a silent agent',
    [
      ['master', connected('Primary')],
      [
        'backup',
        {
          status: {
            ...connected('Secondary').status,
            lastHeartbeatTime: new Date(now.getTime() - 60_000).toISOString(),
          },
          generation: 1,
        },
      ],
    ],
    {},
    { phase: 'Degraded', reason: 'AgentSilent' },
  ],
  [
    "the agent's Lease 40 s old and its report a minute old: silent",
    [
      ['master', connected('Primary')],
      [
        'backup',
        {
          status: {
            ...connected('Secondary').status,
            lastHeartbeatTime: new Date(now.getTime() - 60_000).toISOString(),
          },
          generation: 1,
        },
      ],
    ],
    { agentRenewTimes: { backup: new Date(now.getTime() - 40_000).toISOString() } },
    { phase: 'Degraded', reason: 'AgentSilent' },
  ],
  [
    'a lost link',
    [
      ['master', rs({ role: 'Primary', connectionState: 'WFConnection', diskState: 'UpToDate' })],
      ['backup', rs({ role: 'Secondary', connectionState: 'WFConnection', diskState: 'Outdated' })],
    ],
    {},
    { phase: 'Degraded', reason: 'Disconnected', disks: 'UpToDate/Outdated' },
  ],
  [
    'deletion',
    [
      ['master', connected('Primary')],
      ['backup', connected('Secondary')],
    ],
    { deleting: true },
    { phase: 'Deleting', reason: 'Deleting' },
  ],
])('%s', (_name, replicas, o, want) => {
  const s = aggregateStatus(input(replicas, o));
  const ready = s.conditions?.find((c) => c.type === 'Ready');
  expect({
    phase: s.phase,
    reason: ready?.reason,
    ...(want.sync ? { sync: s.sync } : {}),
    ...(want.disks ? { disks: s.disks } : {}),
  }).toEqual(want);
  expect(ready?.status).toBe('False');
});

test("a replica reported a minute ago (at rest) whose agent's Lease is fresh is Ready: the Lease is the sign of life", () => {
  const old = {
    status: { ...connected('Secondary').status, lastHeartbeatTime: new Date(now.getTime() - 60_000).toISOString() },
    generation: 1,
  };
  const s = aggregateStatus(
    input(
      [
        ['master', connected('Primary')],
        ['backup', old],
      ],
      {
        agentRenewTimes: { backup: new Date(now.getTime() - 2_000).toISOString() },
      },
    ),
  );
  expect(s.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'True', reason: 'Replicated' });
});

test('in sync but the Secondary still fenced is not Ready (no failover to it yet); the lift makes it Ready', () => {
  const fence = {
    node: 'backup',
    epoch: 1,
    by: 'master',
    time: beat,
    reason: 'master lost its peer and writes on without it',
  };
  const pair: [string, ReturnType<typeof rs>][] = [
    ['master', connected('Primary')],
    ['backup', connected('Secondary')],
  ];
  const fenced = aggregateStatus(input(pair, { previous: { fence } }));
  expect(fenced.fence).toEqual(fence);
  expect(fenced.phase).toBe('Degraded');
  expect(fenced.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'PeerFenced' });
  expect(fenced.conditions?.find((c) => c.type === 'Ready')?.message).toMatch(
    /backup is in sync but still fenced .*master's agent lifts/,
  );
  const { fence: _lifted, ...rest } = fenced;
  expect(aggregateStatus(input(pair, { previous: rest })).conditions?.find((c) => c.type === 'Ready')).toMatchObject({
    status: 'True',
    reason: 'Replicated',
  });
});

test('an unchanged world gives an identical status (no write), keeping transition times', () => {
  const first = aggregateStatus(
    input([
      ['master', connected('Primary')],
      ['backup', connected('Secondary')],
    ]),
  );
  const later = aggregateStatus(
    input(
      [
        ['master', connected('Primary')],
        ['backup', connected('Secondary')],
      ],
      { previous: first, now: new Date(now.getTime() + 10_000) },
    ),
  );
  expect(sameStatus(first, later)).toBe(true);
  // The API server hands the object back with sorted keys; still the same.
  expect(
    sameStatus(
      JSON.parse(
        JSON.stringify(
          first,
          Object.keys(first)
            .sort()
            .concat([
              'type',
              'status',
              'reason',
              'message',
              'lastTransitionTime',
              'observedGeneration',
              'node',
              'role',
              'connectionState',
              'diskState',
              'outOfSyncBytes',
            ]),
        ),
      ),
      later,
    ),
  ).toBe(true);
});

test('events: promotion, sync start and finish, readiness', () => {
  const syncing = aggregateStatus(
    input([
      ['master', rs({ role: 'Primary', connectionState: 'SyncSource', diskState: 'UpToDate', syncProgress: 1 })],
      ['backup', rs({ role: 'Secondary', connectionState: 'SyncTarget', diskState: 'Inconsistent', syncProgress: 1 })],
    ]),
  );
  const e1 = eventsBetween(undefined, syncing).map((e) => e.reason);
  expect(e1).toEqual(['Promoted', 'SyncStarted', 'SyncStarted']);
  const done = aggregateStatus(
    input(
      [
        ['master', connected('Primary')],
        ['backup', connected('Secondary')],
      ],
      { previous: syncing },
    ),
  );
  expect(eventsBetween(syncing, done).map((e) => e.reason)).toEqual(['SyncFinished', 'SyncFinished', 'Ready']);
  expect(eventsBetween(done, done)).toEqual([]);
});

test('the chosen Primary is kept when no decision could be made (a node missing from the cache)', () => {
  const previous = aggregateStatus(
    input([
      ['master', connected('Primary')],
      ['backup', connected('Secondary')],
    ]),
  );
  expect(previous.primary).toBe('master');
  const s = aggregateStatus(
    input([['master', connected('Primary')]], {
      previous,
      roles: undefined,
      placementFailure: { reason: 'NodeNotFound', message: 'node backup does not exist' },
    }),
  );
  expect({ primary: s.primary, epoch: s.epoch }).toEqual({ primary: 'master', epoch: previous.epoch });
});

test('a change of the chosen Primary is recorded and told as a RoleChanged event with its cause', () => {
  const before = aggregateStatus(
    input([
      ['master', connected('Primary')],
      ['backup', connected('Secondary')],
    ]),
  );
  const roles = decideRoles({
    nodes: ['master', 'backup'],
    preferred: 'backup',
    chosen: 'master',
    epoch: 1,
    now,
    observed: [
      { node: 'master', role: 'Primary', diskState: 'UpToDate', connectionState: 'Connected', lastHeartbeatTime: beat },
      {
        node: 'backup',
        role: 'Secondary',
        diskState: 'UpToDate',
        connectionState: 'Connected',
        lastHeartbeatTime: beat,
      },
    ],
  });
  const after = aggregateStatus(
    input(
      [
        ['master', connected('Primary')],
        ['backup', connected('Secondary')],
      ],
      { previous: before, roles },
    ),
  );
  expect(after.lastRoleChange).toMatchObject({ from: 'master', to: 'backup', epoch: 2, reason: 'PreferredPrimary' });
  expect(eventsBetween(before, after)).toContainEqual({
    type: 'Normal',
    reason: 'RoleChanged',
    message: expect.stringMatching(/^Primary master -> backup at epoch 2 \(PreferredPrimary\)/),
  });
  // Written once: the next look at the same decision tells nothing new.
  expect(eventsBetween(after, aggregateStatus(input([], { previous: after, roles })))).not.toContainEqual(
    expect.objectContaining({ reason: 'RoleChanged' }),
  );
});
