import type { ReplicatedVolumeStatus } from '../../api/replicated-volume.ts';
import { decideRoles } from './roles.ts';
import {
  type AttachmentView,
  csiUniqueVolumeName,
  decideWorkloadRelease,
  type PodView,
  keepsPodsOff,
  releaseDue,
  volumesInUseWithout,
  type WorkloadWorld,
  workloadToFree,
} from './workload.ts';

const DRIVER = 'tandem.dev';
const HANDLE = 'apps.pvc-1';
const time = '2026-12-07T04:00:00Z';

/** The status right after a failover from master to backup at epoch 3, its fence recorded. */
const failedOver: ReplicatedVolumeStatus = {
  primary: 'backup',
  epoch: 3,
  fence: { node: 'master', epoch: 3, by: 'tandem-controller', time, reason: 'failover from master (node lost)' },
  lastFailover: { from: 'master', to: 'backup', epoch: 3, time, reason: 'node master has not been Ready for 10 s' },
};

test.each<[string, ReplicatedVolumeStatus | undefined, ReturnType<typeof releaseDue>]>([
  ['after a failover whose fence is recorded', failedOver, { node: 'master', epoch: 3, primary: 'backup' }],
  [
    'a fence an agent recorded later on the same node',
    { ...failedOver, fence: { ...failedOver.fence!, epoch: 4, by: 'backup' }, epoch: 3 },
    { node: 'master', epoch: 3, primary: 'backup' },
  ],
  ['no status at all', undefined, undefined],
  ['no failover ever', { primary: 'master', epoch: 1 }, undefined],
  ['a failover but no fence (lifted: the old node is back in sync)', { ...failedOver, fence: undefined }, undefined],
  ['the fence names the other node', { ...failedOver, fence: { ...failedOver.fence!, node: 'backup' } }, undefined],
  ['a fence older than the failover', { ...failedOver, fence: { ...failedOver.fence!, epoch: 2 } }, undefined],
  ['the chosen Primary is not the failover target', { ...failedOver, primary: 'master' }, undefined],
  ['a role change after the failover (epoch moved on)', { ...failedOver, epoch: 4 }, undefined],
  [
    'a failover record that names one node twice',
    { ...failedOver, primary: 'master', lastFailover: { ...failedOver.lastFailover!, to: 'master' } },
    undefined,
  ],
  [
    'already released for this failover (a controller restart)',
    {
      ...failedOver,
      lastWorkloadRelease: { node: 'master', epoch: 3, pods: ['apps/db-0'], volumeAttachments: ['csi-a'], at: time },
    },
    undefined,
  ],
  [
    'released for an earlier failover only',
    { ...failedOver, lastWorkloadRelease: { node: 'master', epoch: 1, pods: [], volumeAttachments: [], at: time } },
    { node: 'master', epoch: 3, primary: 'backup' },
  ],
])('releaseDue: %s', (_what, status, expected) => {
  expect(releaseDue(status)).toEqual(expected);
});

test("the roles decision's own failover is due at once, the fence being in the same status", () => {
  const now = new Date('2026-12-07T04:00:00Z');
  const d = decideRoles({
    nodes: ['master', 'backup'],
    preferred: 'master',
    chosen: 'master',
    epoch: 2,
    failover: { enabled: true, nodeNotReadySeconds: 10 },
    health: { master: { ready: false, since: new Date(now.getTime() - 11_000) }, backup: { ready: true } },
    now,
    observed: [
      { node: 'master', role: 'Primary', diskState: 'UpToDate', lastHeartbeatTime: '2026-12-07T03:59:40Z' },
      {
        node: 'backup',
        role: 'Secondary',
        diskState: 'UpToDate',
        connectionState: 'Connecting',
        lastHeartbeatTime: '2026-12-07T03:59:59Z',
      },
    ],
  });
  expect(d.reason).toBe('Failover');
  const stored: ReplicatedVolumeStatus = {
    primary: d.primary,
    epoch: d.epoch,
    fence: d.fence,
    lastFailover: d.failover,
  };
  expect(releaseDue(stored)).toEqual({ node: 'master', epoch: 3, primary: 'backup' });
  // Before that status is stored, the status read has no fence and nothing is due.
  expect(releaseDue({ primary: 'master', epoch: 2 })).toBeUndefined();
});

const pod = (name: string, o: Partial<PodView> = {}): PodView => ({
  namespace: 'apps',
  name,
  uid: `uid-${name}`,
  nodeName: 'master',
  phase: 'Running',
  claims: ['data-db-0'],
  ...o,
});
const va = (name: string, o: Partial<AttachmentView> = {}): AttachmentView => ({
  name,
  uid: `uid-${name}`,
  attacher: DRIVER,
  nodeName: 'master',
  persistentVolumeName: 'pv-db',
  ...o,
});

/** The volume's PV and claim, and around them everything that must never be touched. */
const world: WorkloadWorld = {
  driver: DRIVER,
  volumeHandle: HANDLE,
  pvs: [
    { name: 'pv-db', driver: DRIVER, volumeHandle: HANDLE, claim: { namespace: 'apps', name: 'data-db-0' } },
    { name: 'pv-other', driver: DRIVER, volumeHandle: 'apps.pvc-2', claim: { namespace: 'apps', name: 'data-other' } },
    // Another driver's PV with the same handle text: not ours.
    { name: 'pv-foreign', driver: 'other.csi.io', volumeHandle: HANDLE, claim: { namespace: 'apps', name: 'foreign' } },
  ],
  pvcs: [
    { namespace: 'apps', name: 'data-db-0', volumeName: 'pv-db' },
    { namespace: 'apps', name: 'data-other', volumeName: 'pv-other' },
    { namespace: 'apps', name: 'foreign', volumeName: 'pv-foreign' },
    // Same name as the bound claim, another namespace: not bound to pv-db.
    { namespace: 'web', name: 'data-db-0', volumeName: 'pv-db' },
  ],
  pods: [
    pod('db-0'),
    pod('stuck', { phase: 'Running' }),
    pod('ephemeral-user', { claims: ['scratch', 'data-db-0'] }),
    pod('db-0-on-backup', { nodeName: 'backup' }),
    pod('other-volume', { claims: ['data-other'] }),
    pod('foreign-driver', { claims: ['foreign'] }),
    pod('web-same-claim-name', { namespace: 'web' }),
    pod('finished', { phase: 'Succeeded' }),
    pod('failed', { phase: 'Failed' }),
    pod('unscheduled', { nodeName: undefined }),
  ],
  attachments: [
    va('csi-db-master'),
    va('csi-db-backup', { nodeName: 'backup' }),
    va('csi-other-master', { persistentVolumeName: 'pv-other' }),
    va('foreign-master', { attacher: 'other.csi.io' }),
    va('inline', { persistentVolumeName: undefined }),
  ],
};

test("only the lost node's pods that mount this volume, and only our attachments of it to that node", () => {
  const r = workloadToFree({ node: 'master', epoch: 3, primary: 'backup' }, world);
  expect(r).toEqual({
    node: 'master',
    epoch: 3,
    pods: [
      { namespace: 'apps', name: 'db-0', uid: 'uid-db-0' },
      { namespace: 'apps', name: 'ephemeral-user', uid: 'uid-ephemeral-user' },
      { namespace: 'apps', name: 'stuck', uid: 'uid-stuck' },
    ],
    attachments: [{ name: 'csi-db-master', uid: 'uid-csi-db-master' }],
  });
});

test('the other node is never touched, whichever node was lost', () => {
  const r = workloadToFree({ node: 'backup', epoch: 4, primary: 'master' }, world);
  expect(r.pods.map((p) => p.name)).toEqual(['db-0-on-backup']);
  expect(r.attachments.map((a) => a.name)).toEqual(['csi-db-backup']);
});

test('a claim bound only one way (PV claimRef elsewhere) is not the volume', () => {
  const r = workloadToFree(
    { node: 'master', epoch: 3, primary: 'backup' },
    { ...world, pvs: [{ ...world.pvs[0]!, claim: { namespace: 'apps', name: 'someone-else' } }] },
  );
  expect(r.pods).toEqual([]);
  // The attachment is of the PV itself, claim or not: it goes.
  expect(r.attachments.map((a) => a.name)).toEqual(['csi-db-master']);
});

test('nothing of the volume on the lost node: an empty release, still a release', () => {
  const r = workloadToFree({ node: 'master', epoch: 3, primary: 'backup' }, { ...world, volumeHandle: 'apps.none' });
  expect(r).toEqual({ node: 'master', epoch: 3, pods: [], attachments: [] });
});

test('decideWorkloadRelease returns nothing before the fence is recorded, and nothing twice', () => {
  expect(decideWorkloadRelease({ ...failedOver, fence: undefined }, world)).toBeUndefined();
  const first = decideWorkloadRelease(failedOver, world);
  expect(first?.pods).toHaveLength(3);
  const after: ReplicatedVolumeStatus = {
    ...failedOver,
    lastWorkloadRelease: {
      node: 'master',
      epoch: 3,
      pods: first!.pods.map((p) => `${p.namespace}/${p.name}`),
      volumeAttachments: first!.attachments.map((a) => a.name),
      at: time,
    },
  };
  expect(decideWorkloadRelease(after, world)).toBeUndefined();
});

describe('keepsPodsOff: freed pods cannot be scheduled back onto the lost node', () => {
  test.each([
    ['unreachable NoSchedule', { taints: [{ key: 'node.kubernetes.io/unreachable', effect: 'NoSchedule' }] }, true],
    ['not-ready NoSchedule', { taints: [{ key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule' }] }, true],
    ['cordoned', { unschedulable: true, taints: [] }, true],
    ['gone', undefined, true],
    ['no taint yet', { taints: [] }, false],
    ['only the NoExecute taint', { taints: [{ key: 'node.kubernetes.io/unreachable', effect: 'NoExecute' }] }, false],
    ['another NoSchedule taint', { taints: [{ key: 'example.com/gpu', effect: 'NoSchedule' }] }, false],
  ] as const)('%s', (_what, node, expected) => {
    expect(keepsPodsOff(node === undefined ? undefined : { ...node, taints: [...node.taints] })).toBe(expected);
  });
});

describe("volumesInUseWithout: only this volume leaves the lost node's volumesInUse", () => {
  const ours = csiUniqueVolumeName(DRIVER, HANDLE);
  const other = csiUniqueVolumeName(DRIVER, 'apps.pvc-2');
  const foreign = 'kubernetes.io/csi/other.csi.example^apps.pvc-1';
  test('the name is the one the kubelet writes', () => {
    expect(ours).toBe('kubernetes.io/csi/tandem.dev^apps.pvc-1');
  });
  test.each<[string, string[], string[] | undefined]>([
    ['listed with others', [other, ours, foreign], [other, foreign]],
    ['listed alone', [ours], []],
    ['not listed: nothing to write', [other, foreign], undefined],
    ['an empty list', [], undefined],
    ["another driver's volume of the same handle stays", [foreign], undefined],
  ])('%s', (_what, inUse, expected) => {
    expect(volumesInUseWithout(inUse, ours)).toEqual(expected);
  });
});
