// The rendered configuration must mean, to tandemadm's own parser, exactly what the replica spec says.
import { parseConfigText } from '../cli/drbd-config/index.ts';
import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import { fenceHandlerCommand, renderConfig } from './render-config.ts';

const spec: ReplicatedVolumeReplicaSpec = {
  volume: 'mysql',
  engine: 'Up',
  resource: 'db.mysql',
  node: 'master',
  role: 'Primary',
  initialSync: false,
  forcePrimary: false,
  epoch: 3,
  port: 7790,
  minor: 1,
  self: { node: 'master', address: '10.77.0.11', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
  peer: { node: 'backup', address: '10.77.0.12', disk: '/dev/sdb1', metaDisk: 'internal' },
  protocol: 'B',
  sizeBytes: 512 * 2 ** 20,
  resyncRateBytes: 100 * 2 ** 20,
  verifyAlg: 'sha1',
  onIoError: 'pass_on',
  splitBrain: { afterSb0pri: 'discard-zero-changes', afterSb1pri: 'discard-secondary', afterSb2pri: 'disconnect' },
  secretName: 'mysql-peer',
};

test('tandemadm parses the rendered file back into the spec', () => {
  const { config, warnings } = parseConfigText(renderConfig(spec, 's3cr"t\\x'), '/run/tandem/db.mysql.res');
  expect(warnings).toEqual([]);
  const res = config.resources[0]!;
  expect(res).toMatchObject({ name: 'db.mysql', protocol: 'B', options: { attach: 'auto' } });
  expect(res.net).toMatchObject({
    cramHmacAlg: 'sha256',
    sharedSecret: 's3cr"t\\x',
    verifyAlg: 'sha1',
    afterSb0pri: 'discard-zero-changes',
    afterSb1pri: 'discard-secondary',
    afterSb2pri: 'disconnect',
  });
  expect(res.disk).toMatchObject({ onIoError: 'pass_on', size: 512 * 2 ** 20, resyncRate: 100 * 2 ** 20 });
  expect(res.hosts).toEqual([
    expect.objectContaining({
      name: 'master',
      device: '/dev/nbd1',
      disk: '/dev/sdb1',
      metaDisk: { kind: 'indexed', path: '/dev/sdb2', index: 0 },
      address: { family: 'ipv4', host: '10.77.0.11', port: 7790 },
      minor: 1,
    }),
    expect.objectContaining({
      name: 'backup',
      disk: '/dev/sdb1',
      metaDisk: { kind: 'internal' },
      address: { family: 'ipv4', host: '10.77.0.12', port: 7790 },
    }),
  ]);
});

test('with a fence handler: fencing resource-and-stonith and the fence-peer, unfence-peer and split-brain commands, quoted so sh runs it as written', () => {
  const command = fenceHandlerCommand('/usr/local/bin/node', '/app/bin/tandem-fence-peer.js', "/run/it's/agent.sock");
  expect(command).toBe("'/usr/local/bin/node' '/app/bin/tandem-fence-peer.js' '/run/it'\\''s/agent.sock'");
  const { config, warnings } = parseConfigText(renderConfig(spec, 'x', { command }), '/run/tandem/db.mysql.res');
  expect(warnings).toEqual([]);
  const res = config.resources[0]!;
  expect(res.disk).toMatchObject({
    fencing: 'resource-and-stonith',
    discardedDataDir: '/var/lib/tandem/discarded/master',
  });
  expect(res.handlers).toEqual({ 'fence-peer': command, 'unfence-peer': command, 'split-brain': command });
});

test('without a fence handler the engine does not freeze on peer loss', () => {
  const res = parseConfigText(renderConfig(spec, 'x'), '/run/tandem/db.mysql.res').config.resources[0]!;
  expect(res.disk.fencing).toBe('dont-care');
});
