import { decideRoles, type ObservedReplica, type RolesInput } from './roles.ts';

const fresh = (node: string, cs = 'Connected'): ObservedReplica => ({
  node,
  role: 'Secondary',
  connectionState: cs,
  diskState: 'Inconsistent',
  currentUuid: '0000000000000004',
});
const up = (node: string, role = 'Secondary', disk = 'UpToDate', cs = 'Connected'): ObservedReplica => ({
  node,
  role,
  connectionState: cs,
  diskState: disk,
  currentUuid: 'A1B2C3D4E5F60708',
});
const input = (o: Partial<RolesInput>): RolesInput => ({
  nodes: ['master', 'backup'],
  preferred: undefined,
  chosen: undefined,
  epoch: 0,
  observed: [],
  ...o,
});

test.each<
  [
    string,
    Partial<RolesInput>,
    {
      primary: string | undefined;
      epoch: number;
      reason: string;
      master: string;
      backup: string;
      initialSync?: string;
    },
  ]
>([
  [
    'no agent has reported yet: nobody is promoted',
    {},
    { primary: undefined, epoch: 0, reason: 'WaitingForAgents', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'a fresh pair not yet connected waits',
    { observed: [fresh('master', 'WFConnection'), fresh('backup', 'WFConnection')] },
    { primary: undefined, epoch: 0, reason: 'WaitingForConnection', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'a fresh connected pair: initial sync from the first replica',
    { observed: [fresh('master'), fresh('backup')] },
    {
      primary: 'master',
      epoch: 1,
      reason: 'InitialSync',
      master: 'Primary',
      backup: 'Secondary',
      initialSync: 'master',
    },
  ],
  [
    'a fresh connected pair: initial sync from the preferred node',
    { preferred: 'backup', observed: [fresh('master'), fresh('backup')] },
    {
      primary: 'backup',
      epoch: 1,
      reason: 'InitialSync',
      master: 'Secondary',
      backup: 'Primary',
      initialSync: 'backup',
    },
  ],
  [
    'only one side fresh (the other has history): never forced',
    { observed: [fresh('master'), up('backup', 'Secondary', 'Outdated')] },
    { primary: undefined, epoch: 0, reason: 'WaitingForUpToDate', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'UpToDate preferred node is promoted',
    { preferred: 'master', observed: [up('master'), up('backup')] },
    { primary: 'master', epoch: 1, reason: 'Promoting', master: 'Primary', backup: 'Secondary' },
  ],
  [
    'no preference: the node with UpToDate data',
    { observed: [up('master', 'Secondary', 'Inconsistent', 'SyncTarget'), up('backup')] },
    { primary: 'backup', epoch: 1, reason: 'Promoting', master: 'Secondary', backup: 'Primary' },
  ],
  [
    'a preferred node that is still SyncTarget is not promoted, and the other is not either',
    { preferred: 'master', observed: [up('master', 'Secondary', 'Inconsistent', 'SyncTarget'), up('backup')] },
    { primary: undefined, epoch: 0, reason: 'WaitingForUpToDate', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'a stable Primary keeps its epoch',
    { preferred: 'master', chosen: 'master', epoch: 3, observed: [up('master', 'Primary'), up('backup')] },
    { primary: 'master', epoch: 3, reason: 'Stable', master: 'Primary', backup: 'Secondary' },
  ],
  [
    'the chosen Primary stays when spec.primary is unset',
    { chosen: 'backup', epoch: 2, observed: [up('master'), up('backup', 'Primary')] },
    { primary: 'backup', epoch: 2, reason: 'Stable', master: 'Secondary', backup: 'Primary' },
  ],
  [
    'switch, step 1: the old Primary is demoted, the new one not yet promoted; the epoch moves on',
    { preferred: 'backup', chosen: 'master', epoch: 3, observed: [up('master', 'Primary'), up('backup')] },
    { primary: 'backup', epoch: 4, reason: 'Switching', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'switch, step 2: once the old Primary is Secondary the new one is promoted, same epoch',
    { preferred: 'backup', chosen: 'backup', epoch: 4, observed: [up('master'), up('backup')] },
    { primary: 'backup', epoch: 4, reason: 'Promoting', master: 'Secondary', backup: 'Primary' },
  ],
  [
    'an initial sync order stands while the agent has not reported on it, though the peer already syncs',
    {
      chosen: 'master',
      epoch: 1,
      observed: [
        { ...fresh('master'), stale: true, ordered: { role: 'Primary', initialSync: true } },
        {
          node: 'backup',
          role: 'Secondary',
          connectionState: 'SyncTarget',
          diskState: 'Inconsistent',
          currentUuid: '0000000000000004',
        },
      ],
    },
    {
      primary: 'master',
      epoch: 1,
      reason: 'InitialSync',
      master: 'Primary',
      backup: 'Secondary',
      initialSync: 'master',
    },
  ],
  [
    'an answered order that did not take effect is reconsidered',
    {
      chosen: 'master',
      epoch: 1,
      observed: [
        { ...up('master', 'Secondary', 'Outdated'), ordered: { role: 'Primary', initialSync: false } },
        up('backup', 'Secondary', 'Outdated'),
      ],
    },
    { primary: 'master', epoch: 1, reason: 'WaitingForUpToDate', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'two Primaries reported (never ordered): both but the target are demoted',
    { preferred: 'master', chosen: 'master', epoch: 1, observed: [up('master', 'Primary'), up('backup', 'Primary')] },
    { primary: 'master', epoch: 1, reason: 'Switching', master: 'Secondary', backup: 'Secondary' },
  ],
])('%s', (_name, given, want) => {
  const d = decideRoles(input(given));
  expect({
    primary: d.primary,
    epoch: d.epoch,
    reason: d.reason,
    master: d.desired.master,
    backup: d.desired.backup,
    ...(d.initialSync ? { initialSync: d.initialSync } : {}),
  }).toEqual(want);
});

test('never more than one desired Primary, whatever is observed', () => {
  const roles = ['Primary', 'Secondary', 'Unconfigured', undefined];
  const disks = ['UpToDate', 'Inconsistent', 'Outdated', undefined];
  for (const rm of roles)
    for (const rb of roles)
      for (const dm of disks)
        for (const db of disks)
          for (const preferred of ['master', 'backup', undefined]) {
            const d = decideRoles(
              input({
                preferred,
                observed: [
                  { node: 'master', role: rm, diskState: dm, connectionState: 'Connected' },
                  { node: 'backup', role: rb, diskState: db, connectionState: 'Connected' },
                ],
              }),
            );
            const primaries = Object.values(d.desired).filter((r) => r === 'Primary');
            expect(primaries.length).toBeLessThanOrEqual(1);
            // A desired Primary has UpToDate data, or is already Primary.
            for (const [node, role] of Object.entries(d.desired)) {
              if (role !== 'Primary') continue;
              const o = node === 'master' ? { r: rm, d: dm } : { r: rb, d: db };
              expect(o.r === 'Primary' || o.d === 'UpToDate').toBe(true);
            }
          }
});

describe('failover', () => {
  const now = new Date('2026-11-25T12:00:00Z');
  const ago = (s: number) => new Date(now.getTime() - s * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  const failover = { enabled: true, nodeNotReadySeconds: 10 };
  const fresh = (r: ObservedReplica, age = 1): ObservedReplica => ({ ...r, lastHeartbeatTime: ago(age) });
  // master was Primary (epoch 3); backup is UpToDate and has lost it.
  const base = (o: Partial<RolesInput> = {}): RolesInput =>
    input({
      preferred: 'master',
      chosen: 'master',
      epoch: 3,
      now,
      failover,
      health: { master: { ready: true }, backup: { ready: true } },
      observed: [
        fresh(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
        fresh(up('backup', 'Secondary', 'UpToDate', 'WFConnection')),
      ],
      ...o,
    });
  const summary = (d: ReturnType<typeof decideRoles>) => ({
    primary: d.primary,
    epoch: d.epoch,
    reason: d.reason,
    master: d.desired.master,
    backup: d.desired.backup,
    fenced: d.fence?.node,
  });

  test.each<[string, Partial<RolesInput>, ReturnType<typeof summary>]>([
    [
      "the Primary's agent silent 30 s and backup lost it: backup is promoted, epoch+1, master fenced in the same write",
      {},
      { primary: 'backup', epoch: 4, reason: 'Failover', master: 'Secondary', backup: 'Primary', fenced: 'master' },
    ],
    [
      "the Primary's Node not Ready for 12 s (agent fresh): failover too",
      {
        health: { master: { ready: false, since: new Date(now.getTime() - 12_000) }, backup: { ready: true } },
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection')),
          fresh(up('backup', 'Secondary', 'UpToDate', 'WFConnection')),
        ],
      },
      { primary: 'backup', epoch: 4, reason: 'Failover', master: 'Secondary', backup: 'Primary', fenced: 'master' },
    ],
    [
      'Node not Ready for only 5 s: not yet',
      {
        health: { master: { ready: false, since: new Date(now.getTime() - 5_000) }, backup: { ready: true } },
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection')),
          fresh(up('backup', 'Secondary', 'UpToDate', 'WFConnection')),
        ],
      },
      { primary: 'master', epoch: 3, reason: 'Stable', master: 'Primary', backup: 'Secondary', fenced: undefined },
    ],
    [
      'failover disabled: master stays',
      { failover: { enabled: false, nodeNotReadySeconds: 10 } },
      { primary: 'master', epoch: 3, reason: 'Stable', master: 'Primary', backup: 'Secondary', fenced: undefined },
    ],
    [
      "backup still Connected to master (only master's agent is gone): no failover",
      { observed: [fresh(up('master', 'Primary'), 30), fresh(up('backup'))] },
      {
        primary: 'master',
        epoch: 3,
        reason: 'FailoverBlocked',
        master: 'Primary',
        backup: 'Secondary',
        fenced: undefined,
      },
    ],
    [
      'backup fenced by master: never promoted automatically',
      { fence: { node: 'backup', epoch: 3, by: 'master', time: ago(60), reason: 'master lost its peer' } },
      {
        primary: 'master',
        epoch: 3,
        reason: 'FailoverBlocked',
        master: 'Primary',
        backup: 'Secondary',
        fenced: undefined,
      },
    ],
    [
      'backup Inconsistent (the Primary died during the initial sync): not promoted',
      {
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
          fresh(up('backup', 'Secondary', 'Inconsistent', 'WFConnection')),
        ],
      },
      {
        primary: 'master',
        epoch: 3,
        reason: 'FailoverBlocked',
        master: 'Primary',
        backup: 'Secondary',
        fenced: undefined,
      },
    ],
    [
      'backup Outdated: not promoted',
      {
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
          fresh(up('backup', 'Secondary', 'Outdated', 'WFConnection')),
        ],
      },
      {
        primary: 'master',
        epoch: 3,
        reason: 'FailoverBlocked',
        master: 'Primary',
        backup: 'Secondary',
        fenced: undefined,
      },
    ],
    [
      "backup's agent silent too: no evidence, no failover",
      {
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
          fresh(up('backup', 'Secondary', 'UpToDate', 'WFConnection'), 20),
        ],
      },
      {
        primary: 'master',
        epoch: 3,
        reason: 'FailoverBlocked',
        master: 'Primary',
        backup: 'Secondary',
        fenced: undefined,
      },
    ],
    [
      'after the failover: master (fenced, still reported Primary) is not a reason to demote backup, even though spec.primary names master',
      {
        chosen: 'backup',
        epoch: 4,
        fence: { node: 'master', epoch: 4, by: 'tandem-controller', time: ago(5), reason: 'failover' },
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection'), 1),
          fresh(up('backup', 'Primary', 'UpToDate', 'WFConnection')),
        ],
      },
      { primary: 'backup', epoch: 4, reason: 'Stable', master: 'Secondary', backup: 'Primary', fenced: undefined },
    ],
    [
      'master back and resynced, fence lifted: spec.primary asks for master, so it switches back (demote first)',
      { chosen: 'backup', epoch: 4, observed: [fresh(up('master')), fresh(up('backup', 'Primary'))] },
      { primary: 'master', epoch: 5, reason: 'Switching', master: 'Secondary', backup: 'Secondary', fenced: undefined },
    ],
    [
      'master back but still SyncTarget: backup stays Primary',
      {
        chosen: 'backup',
        epoch: 4,
        observed: [
          fresh(up('master', 'Secondary', 'Inconsistent', 'SyncTarget')),
          fresh(up('backup', 'Primary', 'UpToDate', 'SyncSource')),
        ],
      },
      { primary: 'backup', epoch: 4, reason: 'Stable', master: 'Secondary', backup: 'Primary', fenced: undefined },
    ],
    [
      'no spec.primary: after the failover backup keeps the role when master is back',
      {
        preferred: undefined,
        chosen: 'backup',
        epoch: 4,
        observed: [fresh(up('master')), fresh(up('backup', 'Primary'))],
      },
      { primary: 'backup', epoch: 4, reason: 'Stable', master: 'Secondary', backup: 'Primary', fenced: undefined },
    ],
    [
      'the operator forces the Inconsistent backup: promoted with --force, master fenced',
      {
        forcePrimary: 'backup',
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
          fresh(up('backup', 'Secondary', 'Inconsistent', 'WFConnection')),
        ],
      },
      {
        primary: 'backup',
        epoch: 4,
        reason: 'ForcedPrimary',
        master: 'Secondary',
        backup: 'Primary',
        fenced: 'master',
      },
    ],
    [
      'force refused while master is Primary and reachable',
      {
        forcePrimary: 'backup',
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection')),
          fresh(up('backup', 'Secondary', 'Inconsistent', 'WFConnection')),
        ],
      },
      {
        primary: 'master',
        epoch: 3,
        reason: 'ForceRefused',
        master: 'Primary',
        backup: 'Secondary',
        fenced: undefined,
      },
    ],
  ])('%s', (_name, given, want) => {
    expect(summary(decideRoles(base(given)))).toEqual(want);
  });

  test('the forced node is flagged for --force; a blocked failover says why and how to override', () => {
    const forced = decideRoles(
      base({
        forcePrimary: 'backup',
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
          fresh(up('backup', 'Secondary', 'Inconsistent', 'WFConnection')),
        ],
      }),
    );
    expect(forced.forcePrimary).toBe('backup');
    expect(forced.failover).toMatchObject({ from: 'master', to: 'backup', epoch: 4 });
    const blocked = decideRoles(
      base({
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
          fresh(up('backup', 'Secondary', 'Inconsistent', 'WFConnection')),
        ],
      }),
    );
    expect(blocked.message).toBe(
      "master is lost (the agent on master has been silent for 30 s) but backup's disk is Inconsistent, not UpToDate; not failing over (to accept the loss: kubectl annotate rv <name> tandem.dev/force-primary=backup)",
    );
    const failover = decideRoles(base());
    expect(failover.failover).toMatchObject({
      from: 'master',
      to: 'backup',
      epoch: 4,
      reason: 'the agent on master has been silent for 30 s',
    });
    expect(failover.fence).toMatchObject({ node: 'master', epoch: 4, by: 'tandem-controller' });
  });

  test('a running failover clock asks to be looked at again when it expires', () => {
    const d = decideRoles(
      base({
        health: { master: { ready: false, since: new Date(now.getTime() - 7_000) }, backup: { ready: true } },
        observed: [
          fresh(up('master', 'Primary', 'UpToDate', 'WFConnection')),
          fresh(up('backup', 'Secondary', 'UpToDate', 'WFConnection')),
        ],
      }),
    );
    expect(d.recheckAfterMs).toBe(3000);
  });

  test('never two desired Primaries and never a fenced or non-UpToDate one without force, over 5,000 seeded random inputs', () => {
    const roles = ['Primary', 'Secondary', undefined];
    const disks = ['UpToDate', 'Inconsistent', 'Outdated', 'Consistent'];
    const conns = ['Connected', 'WFConnection', 'StandAlone'];
    let seed = 20261125;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    for (let k = 0; k < 5000; k++) {
      const pick = <T>(a: readonly T[]) => a[Math.floor(random() * a.length)]!;
      const rep = (node: string): ObservedReplica => ({
        node,
        role: pick(roles),
        diskState: pick(disks),
        connectionState: pick(conns),
        lastHeartbeatTime: ago(pick([1, 8, 30])),
      });
      const obs = [rep('master'), rep('backup')];
      const fence = pick([undefined, 'master', 'backup']);
      const d = decideRoles(
        base({
          observed: obs,
          chosen: pick(['master', 'backup', undefined]),
          preferred: pick(['master', 'backup', undefined]),
          health: {
            master: { ready: pick([true, false]), since: new Date(now.getTime() - pick([1, 20]) * 1000) },
            backup: { ready: pick([true, false]), since: new Date(now.getTime() - pick([1, 20]) * 1000) },
          },
          fence: fence ? { node: fence, epoch: 3, by: 'x', time: ago(1), reason: 'r' } : undefined,
        }),
      );
      expect(Object.values(d.desired).filter((r) => r === 'Primary').length).toBeLessThanOrEqual(1);
      for (const [node, role] of Object.entries(d.desired)) {
        if (role !== 'Primary') continue;
        const o = obs.find((x) => x.node === node)!;
        // Ordered Primary only if it already is, or it has UpToDate data and is not fenced.
        if (!(o.role === 'Primary' || (o.diskState === 'UpToDate' && fence !== node)))
          throw new Error(JSON.stringify({ obs, fence, d }));
      }
    }
  });
});

describe('every change of the chosen Primary carries its cause (status.lastRoleChange)', () => {
  const now = new Date('2026-11-25T12:00:00Z');
  const ago = (s: number) => new Date(now.getTime() - s * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
  const beat = (r: ObservedReplica, age = 1): ObservedReplica => ({ ...r, lastHeartbeatTime: ago(age) });
  const failover = { enabled: true, nodeNotReadySeconds: 10 };
  test.each<[string, Partial<RolesInput>, { from?: string; to: string; epoch: number; reason: string } | undefined]>([
    [
      'the first choice of a fresh pair',
      { observed: [fresh('master'), fresh('backup')] },
      { to: 'master', epoch: 1, reason: 'InitialPlacement' },
    ],
    [
      "the user's spec.primary",
      { preferred: 'backup', chosen: 'master', epoch: 3, observed: [up('master', 'Primary'), up('backup')] },
      { from: 'master', to: 'backup', epoch: 4, reason: 'PreferredPrimary' },
    ],
    [
      'a failover from a silent Primary',
      {
        chosen: 'master',
        epoch: 3,
        now,
        failover,
        observed: [
          beat(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
          beat(up('backup', 'Secondary', 'UpToDate', 'WFConnection')),
        ],
      },
      { from: 'master', to: 'backup', epoch: 4, reason: 'Failover' },
    ],
    [
      "the operator's force",
      {
        chosen: 'master',
        epoch: 3,
        now,
        failover,
        forcePrimary: 'backup',
        observed: [
          beat(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30),
          beat(up('backup', 'Secondary', 'Inconsistent', 'WFConnection')),
        ],
      },
      { from: 'master', to: 'backup', epoch: 4, reason: 'ForcePrimary' },
    ],
    [
      'no change, no record',
      { chosen: 'master', epoch: 3, observed: [up('master', 'Primary'), up('backup')] },
      undefined,
    ],
  ])('%s', (_name, given, want) => {
    const d = decideRoles(input(given));
    expect(
      d.roleChange
        ? {
            ...(d.roleChange.from ? { from: d.roleChange.from } : {}),
            to: d.roleChange.to,
            epoch: d.roleChange.epoch,
            reason: d.roleChange.reason,
          }
        : undefined,
    ).toEqual(want);
    if (d.roleChange) expect(d.roleChange.epoch).toBe(d.epoch);
  });
});
