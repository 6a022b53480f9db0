import { ReplicatedVolume } from '../../api/replicated-volume.ts';
import { decideEngineState, desiredReplicaSpecs } from './replicas.ts';
import { decideRoles } from './roles.ts';

const rv = ReplicatedVolume.parse({
  apiVersion: 'tandem.dev/v1alpha1',
  kind: 'ReplicatedVolume',
  metadata: { name: 'mysql', namespace: 'db' },
  spec: {
    pool: 'tutorial',
    size: '512Mi',
    verifyAlg: 'sha1',
    resyncRate: '100Mi',
    replicas: [
      { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
      { node: 'backup', disk: '/dev/sdb1' },
    ],
    filesystem: 'xfs',
    mountPath: '/mydata/mysql',
  },
});
const placed = [
  { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]', address: '10.0.0.1' },
  { node: 'backup', disk: '/dev/sdb1', metaDisk: 'internal', address: '10.0.0.2' },
] as const;
const fresh = (node: string) => ({
  node,
  role: 'Secondary',
  connectionState: 'Connected',
  diskState: 'Inconsistent',
  currentUuid: '0000000000000004',
});

test('each replica gets itself and its peer, the port, the epoch and the volume options in engine units', () => {
  // master chosen at epoch 1 and backup Secondary at epoch 1: the initial sync's order.
  const roles = decideRoles({
    nodes: ['master', 'backup'],
    preferred: undefined,
    chosen: 'master',
    epoch: 1,
    observed: [
      { ...fresh('master'), epoch: 1 },
      { ...fresh('backup'), epoch: 1 },
    ],
  });
  const [m, b] = desiredReplicaSpecs(rv, placed, 7790, roles, 'Up');
  expect(m).toMatchObject({
    volume: 'mysql',
    resource: 'db.mysql',
    node: 'master',
    engine: 'Up',
    role: 'Primary',
    initialSync: true,
    epoch: 1,
    port: 7790,
    minor: 1,
    self: { node: 'master', address: '10.0.0.1', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
    peer: { node: 'backup', address: '10.0.0.2', disk: '/dev/sdb1', metaDisk: 'internal' },
    protocol: 'C',
    sizeBytes: 512 * 2 ** 20,
    resyncRateBytes: 100 * 2 ** 20,
    verifyAlg: 'sha1',
    pool: 'tutorial',
    secretName: 'peer.db.mysql',
    filesystem: 'xfs',
    mountPath: '/mydata/mysql',
  });
  expect(b).toMatchObject({ node: 'backup', role: 'Secondary', initialSync: false, peer: { node: 'master' } });
});

test('no Primary is ordered before the engines are Up', () => {
  const roles = decideRoles({
    nodes: ['master', 'backup'],
    preferred: 'master',
    chosen: undefined,
    epoch: 0,
    observed: [{ node: 'master', role: 'Secondary', diskState: 'UpToDate' }],
  });
  expect(desiredReplicaSpecs(rv, placed, 7789, roles, 'Probe').map((r) => r.role)).toEqual(['Secondary', 'Secondary']);
});

const found = (status: 'True' | 'False') => ({
  conditions: [{ type: 'DisksFound', status, reason: 'X', message: '', lastTransitionTime: '2026-11-25T12:00:00Z' }],
});
test.each([
  ['deleting', true, [undefined, undefined], [found('True'), found('True')], 'Down'],
  ['no reports yet', false, [undefined, undefined], [undefined, undefined], 'Probe'],
  ['one disk missing', false, ['Probe', 'Probe'], [found('True'), found('False')], 'Probe'],
  ['both disks found', false, ['Probe', 'Probe'], [found('True'), found('True')], 'Up'],
  ['already up stays up', false, ['Up', 'Up'], [undefined, undefined], 'Up'],
] as const)('engine state: %s', (_n, deleting, current, observed, want) => {
  expect(decideEngineState(deleting, current, observed)).toBe(want);
});
