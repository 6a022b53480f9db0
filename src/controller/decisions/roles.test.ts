import { decideRoles, type ObservedReplica, type RolesInput } from './roles.ts';

const fresh = (node: string, cs = 'Connected'): ObservedReplica => ({ node, role: 'Secondary', connectionState: cs, diskState: 'Inconsistent', currentUuid: '0000000000000004' });
const up = (node: string, role = 'Secondary', disk = 'UpToDate', cs = 'Connected'): ObservedReplica => ({ node, role, connectionState: cs, diskState: disk, currentUuid: 'A1B2C3D4E5F60708' });
const input = (o: Partial<RolesInput>): RolesInput => ({ nodes: ['master', 'backup'], preferred: undefined, chosen: undefined, epoch: 0, observed: [], ...o });

test.each<[string, Partial<RolesInput>, { primary: string | undefined; epoch: number; reason: string; master: string; backup: string; initialSync?: string }]>([
  ['no agent has reported yet: nobody is promoted',
    {}, { primary: undefined, epoch: 0, reason: 'WaitingForAgents', master: 'Secondary', backup: 'Secondary' }],
  ['a fresh pair not yet connected waits',
    { observed: [fresh('master', 'WFConnection'), fresh('backup', 'WFConnection')] }, { primary: undefined, epoch: 0, reason: 'WaitingForConnection', master: 'Secondary', backup: 'Secondary' }],
  ['a fresh connected pair: initial sync from the first replica',
    { observed: [fresh('master'), fresh('backup')] }, { primary: 'master', epoch: 1, reason: 'InitialSync', master: 'Primary', backup: 'Secondary', initialSync: 'master' }],
  ['a fresh connected pair: initial sync from the preferred node',
    { preferred: 'backup', observed: [fresh('master'), fresh('backup')] }, { primary: 'backup', epoch: 1, reason: 'InitialSync', master: 'Secondary', backup: 'Primary', initialSync: 'backup' }],
  ['only one side fresh (the other has history): never forced',
    { observed: [fresh('master'), up('backup', 'Secondary', 'Outdated')] }, { primary: undefined, epoch: 0, reason: 'WaitingForUpToDate', master: 'Secondary', backup: 'Secondary' }],
  ['UpToDate preferred node is promoted',
    { preferred: 'master', observed: [up('master'), up('backup')] }, { primary: 'master', epoch: 1, reason: 'Promoting', master: 'Primary', backup: 'Secondary' }],
  ['no preference: the node with UpToDate data',
    { observed: [up('master', 'Secondary', 'Inconsistent', 'SyncTarget'), up('backup')] }, { primary: 'backup', epoch: 1, reason: 'Promoting', master: 'Secondary', backup: 'Primary' }],
  ['a preferred node that is still SyncTarget is not promoted, and the other is not either',
    { preferred: 'master', observed: [up('master', 'Secondary', 'Inconsistent', 'SyncTarget'), up('backup')] }, { primary: undefined, epoch: 0, reason: 'WaitingForUpToDate', master: 'Secondary', backup: 'Secondary' }],
  ['a stable Primary keeps its epoch',
    { preferred: 'master', chosen: 'master', epoch: 3, observed: [up('master', 'Primary'), up('backup')] }, { primary: 'master', epoch: 3, reason: 'Stable', master: 'Primary', backup: 'Secondary' }],
  ['the chosen Primary stays when spec.primary is unset',
    { chosen: 'backup', epoch: 2, observed: [up('master'), up('backup', 'Primary')] }, { primary: 'backup', epoch: 2, reason: 'Stable', master: 'Secondary', backup: 'Primary' }],
  ['switch, step 1: the old Primary is demoted, the new one not yet promoted; the epoch moves on',
    { preferred: 'backup', chosen: 'master', epoch: 3, observed: [up('master', 'Primary'), up('backup')] }, { primary: 'backup', epoch: 4, reason: 'Switching', master: 'Secondary', backup: 'Secondary' }],
  ['switch, step 2: once the old Primary is Secondary the new one is promoted, same epoch',
    { preferred: 'backup', chosen: 'backup', epoch: 4, observed: [up('master'), up('backup')] }, { primary: 'backup', epoch: 4, reason: 'Promoting', master: 'Secondary', backup: 'Primary' }],
  ['an initial sync order stands while the agent has not reported on it, though the peer already syncs',
    { chosen: 'master', epoch: 1, observed: [{ ...fresh('master'), stale: true, ordered: { role: 'Primary', initialSync: true } }, { node: 'backup', role: 'Secondary', connectionState: 'SyncTarget', diskState: 'Inconsistent', currentUuid: '0000000000000004' }] },
    { primary: 'master', epoch: 1, reason: 'InitialSync', master: 'Primary', backup: 'Secondary', initialSync: 'master' }],
  ['an answered order that did not take effect is reconsidered',
    { chosen: 'master', epoch: 1, observed: [{ ...up('master', 'Secondary', 'Outdated'), ordered: { role: 'Primary', initialSync: false } }, up('backup', 'Secondary', 'Outdated')] },
    { primary: 'master', epoch: 1, reason: 'WaitingForUpToDate', master: 'Secondary', backup: 'Secondary' }],
  ['two Primaries reported (never ordered): both but the target are demoted',
    { preferred: 'master', chosen: 'master', epoch: 1, observed: [up('master', 'Primary'), up('backup', 'Primary')] }, { primary: 'master', epoch: 1, reason: 'Switching', master: 'Secondary', backup: 'Secondary' }],
])('%s', (_name, given, want) => {
  const d = decideRoles(input(given));
  expect({ primary: d.primary, epoch: d.epoch, reason: d.reason, master: d.desired.master, backup: d.desired.backup, ...(d.initialSync ? { initialSync: d.initialSync } : {}) }).toEqual(want);
});

test('never more than one desired Primary, whatever is observed', () => {
  const roles = ['Primary', 'Secondary', 'Unconfigured', undefined];
  const disks = ['UpToDate', 'Inconsistent', 'Outdated', undefined];
  for (const rm of roles) for (const rb of roles) for (const dm of disks) for (const db of disks) for (const preferred of ['master', 'backup', undefined]) {
    const d = decideRoles(input({ preferred, observed: [{ node: 'master', role: rm, diskState: dm, connectionState: 'Connected' }, { node: 'backup', role: rb, diskState: db, connectionState: 'Connected' }] }));
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
