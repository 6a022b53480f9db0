import { controllerMetrics } from './metrics.ts';

test("a volume's state series follow its status: the old state's series goes, the new one is 1", async () => {
  const m = controllerMetrics();
  const status = (cs: string, ds: string) => ({
    epoch: 2,
    replicas: [
      {
        node: 'master',
        connectionState: cs,
        diskState: ds,
        outOfSyncBytes: 4096,
        syncProgress: 50,
        lastHeartbeatTime: '2026-12-07T00:00:05.500Z',
      },
    ],
    conditions: [],
  });
  m.observe('db', 'mysql', status('SyncSource', 'UpToDate'));
  m.observe('db', 'mysql', status('Connected', 'UpToDate'));
  const text = await m.registry.metrics();
  expect(text).toContain('tandem_connection_state{namespace="db",volume="mysql",node="master",state="Connected"} 1');
  expect(text).not.toContain('state="SyncSource"');
  expect(text).toContain('tandem_peerdevice_outofsync_bytes{namespace="db",volume="mysql",node="master"} 4096');
  expect(text).toContain('tandem_volume_epoch{namespace="db",volume="mysql"} 2');
  expect(text).toContain(
    'tandem_replica_last_heartbeat_seconds{namespace="db",volume="mysql",node="master"} 1796601605.5',
  );
  // The agent's Lease renewed later than the replica's report: the later sign of life.
  m.observe('db', 'mysql', status('Connected', 'UpToDate'), {
    renewTimes: { master: '2026-12-07T00:00:45.250Z' },
    now: new Date('2026-12-07T00:00:46Z'),
  });
  expect(await m.registry.metrics()).toContain(
    'tandem_replica_last_heartbeat_seconds{namespace="db",volume="mysql",node="master"} 1796601645.25',
  );
  m.observe('db', 'mysql', undefined);
  expect(await m.registry.metrics()).not.toContain('volume="mysql"');
});

test('a fence and a blocked failover are series of their own, gone when the status no longer says so', async () => {
  const m = controllerMetrics();
  const fence = { node: 'backup', epoch: 3, by: 'master', time: '2026-12-07T00:00:00Z', reason: 'lost the peer' };
  const blocked = {
    type: 'Ready',
    status: 'False' as const,
    reason: 'FailoverBlocked',
    message: 'master is lost but backup is fenced',
    lastTransitionTime: '2026-12-07T00:00:00Z',
  };
  m.observe('db', 'mysql', { epoch: 3, fence, conditions: [blocked] });
  let text = await m.registry.metrics();
  expect(text).toContain('tandem_volume_fenced{namespace="db",volume="mysql",node="backup"} 1');
  expect(text).toContain('tandem_volume_failover_blocked{namespace="db",volume="mysql"} 1');
  m.observe('db', 'mysql', { epoch: 4, conditions: [{ ...blocked, status: 'True' as const, reason: 'Ready' }] });
  text = await m.registry.metrics();
  expect(text).not.toContain('tandem_volume_fenced{');
  expect(text).toContain('tandem_volume_failover_blocked{namespace="db",volume="mysql"} 0');
});
