import { controllerMetrics } from './metrics.ts';

test("a volume's state series follow its status: the old state's series goes, the new one is 1", async () => {
  const m = controllerMetrics();
  const status = (cs: string, ds: string) => ({
    epoch: 2,
    replicas: [{ node: 'master', connectionState: cs, diskState: ds, outOfSyncBytes: 4096, syncProgress: 50 }],
    conditions: [],
  });
  m.observe('db', 'mysql', status('SyncSource', 'UpToDate'));
  m.observe('db', 'mysql', status('Connected', 'UpToDate'));
  const text = await m.registry.metrics();
  expect(text).toContain('tandem_connection_state{namespace="db",volume="mysql",node="master",state="Connected"} 1');
  expect(text).not.toContain('state="SyncSource"');
  expect(text).toContain('tandem_peerdevice_outofsync_bytes{namespace="db",volume="mysql",node="master"} 4096');
  expect(text).toContain('tandem_volume_epoch{namespace="db",volume="mysql"} 2');
  m.observe('db', 'mysql', undefined);
  expect(await m.registry.metrics()).not.toContain('volume="mysql"');
});
