import {
  agentSilence,
  decideRoles,
  FAILOVER_EVIDENCE_MS,
  type ObservedReplica,
  REPORT_STALE_MS,
  type RolesInput,
  SWITCH_EVIDENCE_MS,
} from './roles.ts';

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
const NOW = new Date('2026-11-25T12:00:00Z');
/**
 * Reports without an epoch are taken as reports on the input's epoch (the agent has
 * carried out its order), and without a heartbeat as one a second old.
 */
const input = (o: Partial<RolesInput>): RolesInput => ({
  nodes: ['master', 'backup'],
  preferred: undefined,
  chosen: undefined,
  epoch: 0,
  now: NOW,
  ...o,
  observed: (o.observed ?? []).map((r) => ({
    epoch: o.epoch ?? 0,
    lastHeartbeatTime: new Date((o.now ?? NOW).getTime() - 1000).toISOString(),
    ...r,
  })),
});
const ordered = (role: 'Primary' | 'Secondary', epoch: number, initialSync = false) => ({
  ordered: { role, initialSync, epoch },
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
    'no agent has reported yet: nobody is chosen',
    {},
    { primary: undefined, epoch: 0, reason: 'WaitingForAgents', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'a fresh pair not yet connected waits',
    { observed: [fresh('master', 'WFConnection'), fresh('backup', 'WFConnection')] },
    { primary: undefined, epoch: 0, reason: 'WaitingForConnection', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'a fresh connected pair: the first replica is chosen (epoch 1); no order before backup has carried out epoch 1',
    { observed: [fresh('master'), fresh('backup')] },
    { primary: 'master', epoch: 1, reason: 'InitialSync', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'then, backup Secondary at epoch 1: master is promoted for the initial sync',
    { chosen: 'master', epoch: 1, observed: [fresh('master'), fresh('backup')] },
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
    'a fresh connected pair: the preferred node is chosen',
    { preferred: 'backup', observed: [fresh('master'), fresh('backup')] },
    { primary: 'backup', epoch: 1, reason: 'InitialSync', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'only one side fresh (the other has history): never forced',
    { observed: [fresh('master'), up('backup', 'Secondary', 'Outdated')] },
    { primary: undefined, epoch: 0, reason: 'WaitingForUpToDate', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'the UpToDate preferred node is chosen',
    { preferred: 'master', observed: [up('master'), up('backup')] },
    { primary: 'master', epoch: 1, reason: 'Promoting', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'no preference: the node with UpToDate data is chosen',
    { observed: [up('master', 'Secondary', 'Inconsistent', 'SyncTarget'), up('backup')] },
    { primary: 'backup', epoch: 1, reason: 'Promoting', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'a preferred node that is still SyncTarget is waited for, the other is not chosen instead',
    { preferred: 'master', observed: [up('master', 'Secondary', 'Inconsistent', 'SyncTarget'), up('backup')] },
    { primary: undefined, epoch: 0, reason: 'WaitingForUpToDate', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'chosen, the other Secondary at this epoch: promoted',
    { chosen: 'master', epoch: 1, observed: [up('master'), up('backup')] },
    { primary: 'master', epoch: 1, reason: 'Promoting', master: 'Primary', backup: 'Secondary' },
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
    'switch, step 1: spec.primary names backup; the old Primary is demoted, the epoch moves on',
    { preferred: 'backup', chosen: 'master', epoch: 3, observed: [up('master', 'Primary'), up('backup')] },
    { primary: 'backup', epoch: 4, reason: 'Switching', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'switch, step 2: master reports Secondary at epoch 4: backup is promoted, same epoch',
    { preferred: 'backup', chosen: 'backup', epoch: 4, observed: [up('master'), up('backup')] },
    { primary: 'backup', epoch: 4, reason: 'Promoting', master: 'Secondary', backup: 'Primary' },
  ],
  [
    "switch, step 2, master's last report is from before its demotion order: wait",
    {
      preferred: 'backup',
      chosen: 'backup',
      epoch: 4,
      observed: [{ ...up('master'), epoch: 3, stale: true, ...ordered('Secondary', 4) }, up('backup')],
    },
    { primary: 'backup', epoch: 4, reason: 'Switching', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'switch, step 2, master still reports Primary: wait, never two Primaries',
    { preferred: 'backup', chosen: 'backup', epoch: 4, observed: [up('master', 'Primary'), up('backup')] },
    { primary: 'backup', epoch: 4, reason: 'Switching', master: 'Secondary', backup: 'Secondary' },
  ],
  [
    'spec.primary names backup but it is not Connected: master stays, no switch',
    {
      preferred: 'backup',
      chosen: 'master',
      epoch: 3,
      observed: [
        up('master', 'Primary', 'UpToDate', 'WFConnection'),
        up('backup', 'Secondary', 'UpToDate', 'WFConnection'),
      ],
    },
    { primary: 'master', epoch: 3, reason: 'Stable', master: 'Primary', backup: 'Secondary' },
  ],
  [
    'an order granted in this epoch stands though the engine is not Primary (yet, or any more)',
    {
      chosen: 'master',
      epoch: 1,
      observed: [
        { ...up('master', 'Secondary', 'Outdated'), ...ordered('Primary', 1) },
        up('backup', 'Secondary', 'Outdated'),
      ],
    },
    { primary: 'master', epoch: 1, reason: 'Promoting', master: 'Primary', backup: 'Secondary' },
  ],
  [
    "issue 14's flip: backup is the chosen Primary; master's stale report still says Primary; backup is not demoted",
    {
      chosen: 'backup',
      epoch: 5,
      observed: [
        { ...up('master', 'Primary', 'UpToDate', 'StandAlone'), epoch: 4, stale: true, ...ordered('Secondary', 5) },
        { ...up('backup', 'Primary', 'UpToDate', 'Connected'), ...ordered('Primary', 5) },
      ],
    },
    { primary: 'backup', epoch: 5, reason: 'Stable', master: 'Secondary', backup: 'Primary' },
  ],
  [
    'two Primaries reported: the chosen one stays, the other is told to step down',
    { preferred: 'master', chosen: 'master', epoch: 1, observed: [up('master', 'Primary'), up('backup', 'Primary')] },
    { primary: 'master', epoch: 1, reason: 'Stable', master: 'Primary', backup: 'Secondary' },
  ],
  [
    "the chosen Primary's engine is gone (its node rebooted): its order stands",
    {
      chosen: 'master',
      epoch: 2,
      observed: [{ node: 'master', role: 'Unconfigured', ...ordered('Primary', 2) }, up('backup')],
    },
    { primary: 'master', epoch: 2, reason: 'Promoting', master: 'Primary', backup: 'Secondary' },
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

  test('over 20,000 seeded random inputs: never two desired Primaries, never a fenced or non-UpToDate one, no move without a recorded cause, no order withdrawn within its epoch', () => {
    const roles = ['Primary', 'Secondary', 'Unconfigured', undefined];
    const disks = ['UpToDate', 'Inconsistent', 'Outdated', 'Consistent'];
    const conns = ['Connected', 'WFConnection', 'StandAlone'];
    let seed = 20261125;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    for (let k = 0; k < 20_000; k++) {
      const pick = <T>(a: readonly T[]) => a[Math.floor(random() * a.length)]!;
      const epoch = pick([0, 3]);
      const rep = (node: string): ObservedReplica => ({
        node,
        role: pick(roles),
        diskState: pick(disks),
        connectionState: pick(conns),
        lastHeartbeatTime: ago(pick([1, 2, 4, 8, 30, 200])),
        // The agent's Lease: none, fresh or old; a fresh one never stands in for a report.
        agentRenewTime: pick([undefined, ago(0), ago(1), ago(30)]),
        epoch: pick([epoch, epoch - 1]),
        stale: pick([false, false, true]),
        ...(random() < 0.7
          ? {
              ordered: {
                role: pick(['Primary', 'Secondary'] as const),
                initialSync: false,
                epoch: pick([epoch, epoch - 1]),
              },
            }
          : {}),
      });
      const obs = [rep('master'), rep('backup')];
      const fence = pick([undefined, 'master', 'backup']);
      const chosen = pick(['master', 'backup', undefined]);
      const d = decideRoles({
        ...base({
          chosen,
          preferred: pick(['master', 'backup', undefined]),
          health: {
            master: { ready: pick([true, false]), since: new Date(now.getTime() - pick([1, 20]) * 1000) },
            backup: { ready: pick([true, false]), since: new Date(now.getTime() - pick([1, 20]) * 1000) },
          },
          fence: fence ? { node: fence, epoch, by: 'x', time: ago(1), reason: 'r' } : undefined,
        }),
        epoch,
        observed: obs,
      });
      const fail = (why: string) => new Error(`${why}: ${JSON.stringify({ chosen, epoch, obs, fence, d })}`);
      if (Object.values(d.desired).filter((r) => r === 'Primary').length > 1) throw fail('two desired Primaries');
      const granted = (o: ObservedReplica) =>
        o.role === 'Primary' || (o.ordered?.role === 'Primary' && o.ordered.epoch === epoch);
      for (const [node, role] of Object.entries(d.desired)) {
        if (role !== 'Primary') continue;
        const o = obs.find((x) => x.node === node)!;
        // A new Primary order only with UpToDate data and no fence (a new epoch's order is new).
        const renewed = d.epoch === epoch && granted(o);
        if (!renewed && !(o.diskState === 'UpToDate' && fence !== node)) throw fail(`${node} ordered Primary`);
      }
      if (d.primary !== chosen) {
        if (d.roleChange?.from !== chosen || d.roleChange.to !== d.primary || d.roleChange.epoch !== d.epoch)
          throw fail('the Primary moved without a record');
        if (d.epoch !== epoch + 1) throw fail('a move without a new epoch');
      }
      if (
        chosen &&
        d.epoch === epoch &&
        granted(obs.find((x) => x.node === chosen)!) &&
        d.desired[chosen] !== 'Primary'
      )
        throw fail(`${chosen}'s Primary order was withdrawn within epoch ${epoch}`);
      // Evidence is the target's own report, whatever its agent's Lease says.
      const reportAge = (n: string) => now.getTime() - Date.parse(obs.find((x) => x.node === n)!.lastHeartbeatTime!);
      const cause = d.roleChange?.epoch === d.epoch && d.epoch !== epoch ? d.roleChange.reason : undefined;
      if (cause === 'Failover' && reportAge(d.roleChange!.to) >= FAILOVER_EVIDENCE_MS)
        throw fail('a failover on a stale report');
      if ((cause === 'PreferredPrimary' || cause === 'CsiPublish') && reportAge(d.roleChange!.to) >= SWITCH_EVIDENCE_MS)
        throw fail('a switch on a stale report');
    }
  });
});

describe("the agent's Lease: liveness, never evidence", () => {
  const now = new Date('2026-11-25T12:00:00Z');
  const ago = (s: number) => new Date(now.getTime() - s * 1000).toISOString();
  const failover = { enabled: true, nodeNotReadySeconds: 10 };
  const seen = (r: ObservedReplica, report: number, lease?: number): ObservedReplica => ({
    ...r,
    lastHeartbeatTime: ago(report),
    ...(lease !== undefined ? { agentRenewTime: ago(lease) } : {}),
  });
  const base = (master: ObservedReplica, backup: ObservedReplica, o: Partial<RolesInput> = {}): RolesInput =>
    input({
      preferred: 'master',
      chosen: 'master',
      epoch: 3,
      now,
      failover,
      health: { master: { ready: true }, backup: { ready: true } },
      observed: [master, backup],
      ...o,
    });

  test('agentSilence: the later of report and Lease; a report older than REPORT_STALE_MS is silence; no report, no judgement', () => {
    expect(agentSilence(ago(50), ago(2), now)).toBe(2000);
    expect(agentSilence(ago(2), ago(50), now)).toBe(2000);
    expect(agentSilence(ago(50), undefined, now)).toBe(50_000);
    expect(agentSilence(ago(REPORT_STALE_MS / 1000), ago(1), now)).toBe(REPORT_STALE_MS);
    expect(agentSilence(undefined, ago(1), now)).toBeUndefined();
  });

  test.each<[string, ObservedReplica, ObservedReplica, { primary: string; reason: string; fenced?: string }]>([
    [
      "master's last report is 50 s old (at rest) but its Lease was renewed 2 s ago: not lost",
      seen(up('master', 'Primary', 'UpToDate', 'WFConnection'), 50, 2),
      seen(up('backup', 'Secondary', 'UpToDate', 'WFConnection'), 1, 1),
      { primary: 'master', reason: 'Stable' },
    ],
    [
      "master's Lease and report both 30 s old, backup reported apart 1 s ago: failover",
      seen(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30, 30),
      seen(up('backup', 'Secondary', 'UpToDate', 'WFConnection'), 1, 1),
      { primary: 'backup', reason: 'Failover', fenced: 'master' },
    ],
    [
      "master's Lease fresh but its replica unreported for 200 s (the agent is not working on it): lost",
      seen(up('master', 'Primary', 'UpToDate', 'WFConnection'), 200, 1),
      seen(up('backup', 'Secondary', 'UpToDate', 'WFConnection'), 1, 1),
      { primary: 'backup', reason: 'Failover', fenced: 'master' },
    ],
    [
      "master lost; backup's Lease renewed just now but its own report is 5 s old: no failover on the Lease",
      seen(up('master', 'Primary', 'UpToDate', 'WFConnection'), 30, 30),
      seen(up('backup', 'Secondary', 'UpToDate', 'WFConnection'), 5, 0),
      { primary: 'master', reason: 'FailoverBlocked' },
    ],
  ])('%s', (_name, master, backup, want) => {
    const d = decideRoles(base(master, backup));
    expect({ primary: d.primary, reason: d.reason, ...(d.fence ? { fenced: d.fence.node } : {}) }).toEqual(want);
  });

  test('master lost, backup at rest (report 50 s old, Lease fresh) and still Connected: blocked for the Connection, not for silence', () => {
    const d = decideRoles(base(seen(up('master', 'Primary'), 30, 30), seen(up('backup'), 50, 1)));
    expect(d).toMatchObject({ primary: 'master', reason: 'FailoverBlocked' });
    expect(d.message).toContain('still Connected to master');
  });

  test("a switch whose target's report is old asks that agent for one (a fresh Lease is not enough), and switches on the answer", () => {
    const master = seen(up('master', 'Primary'), 40, 1);
    const waiting = decideRoles(base(master, seen(up('backup'), 40, 0), { preferred: 'backup' }));
    expect(waiting).toMatchObject({ primary: 'master', reason: 'Stable', requestReport: 'backup' });
    expect(waiting.recheckAfterMs).toBeLessThanOrEqual(1000);
    const answered = decideRoles(base(master, seen(up('backup'), 1, 0), { preferred: 'backup' }));
    expect(answered).toMatchObject({ primary: 'backup', reason: 'Switching' });
    expect(answered.requestReport).toBeUndefined();
  });

  test('no report is asked for a switch that waits on something else (not Connected, fenced)', () => {
    const master = seen(up('master', 'Primary'), 40, 1);
    const apart = seen(up('backup', 'Secondary', 'UpToDate', 'WFConnection'), 40, 0);
    expect(decideRoles(base(master, apart, { preferred: 'backup' })).requestReport).toBeUndefined();
    expect(
      decideRoles(
        base(master, seen(up('backup'), 40, 0), {
          preferred: 'backup',
          fence: { node: 'backup', epoch: 3, by: 'x', time: ago(1), reason: 'r' },
        }),
      ).requestReport,
    ).toBeUndefined();
    expect(decideRoles(base(master, seen(up('backup'), 40, 0))).requestReport).toBeUndefined();
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
      "the CSI driver's ControllerPublish on the other node",
      {
        preferred: 'backup',
        publishedTo: 'backup',
        chosen: 'master',
        epoch: 3,
        observed: [up('master', 'Primary'), up('backup')],
      },
      { from: 'master', to: 'backup', epoch: 4, reason: 'CsiPublish' },
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
