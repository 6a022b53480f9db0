// A watch across a kube-apiserver restart (etcd keeps running): the client's
// stream breaks, and a client that resumes like an informer (watch again from
// the last resourceVersion, list again on 410 Gone) misses nothing.
import { harness, localOnlyTest, useCluster } from './lib/cluster.ts';
import { eventually } from './lib/eventually.ts';
import { ResumableWatch } from './lib/watch.ts';

const cluster = useCluster();
const ns = cluster.namespacePerTest();

localOnlyTest(
  'a watch survives a kube-apiserver restart without losing an event',
  async () => {
    // Labelled, so that the kube-root-ca.crt ConfigMap kube-controller-manager adds stays out of view.
    const labels = { 'tandem.dev/e2e-watch': 'true' };
    const configMap = (name: string, value: string) => ({
      metadata: { name, namespace: ns.name, labels },
      data: { value },
    });
    await cluster.core.createNamespacedConfigMap({ namespace: ns.name, body: configMap('before', '1') });
    const watch = new ResumableWatch(
      cluster.kc,
      'v1',
      'ConfigMap',
      ns.name,
      `/api/v1/namespaces/${ns.name}/configmaps`,
      'tandem.dev/e2e-watch=true',
    );
    await watch.start();
    try {
      expect(watch.objects.get('before')?.metadata?.name).toBe('before');
      await cluster.core.createNamespacedConfigMap({ namespace: ns.name, body: configMap('during-1', '1') });
      await eventually(() => expect(watch.objects.has('during-1')).toBe(true), { what: 'the watch to see during-1' });
      const connectionsBefore = watch.connections;

      await harness('restart-apiserver');

      await cluster.core.createNamespacedConfigMap({ namespace: ns.name, body: configMap('after', '1') });
      await cluster.core.replaceNamespacedConfigMap({
        name: 'before',
        namespace: ns.name,
        body: configMap('before', '2'),
      });
      await cluster.core.deleteNamespacedConfigMap({ name: 'during-1', namespace: ns.name });
      await eventually(
        () => {
          expect([...watch.objects.keys()].sort()).toEqual(['after', 'before']);
          expect((watch.objects.get('before') as { data?: { value?: string } }).data?.value).toBe('2');
        },
        { timeoutMs: 30_000, what: 'the resumed watch to see every change made after the restart' },
      );
      // The stream really broke and was re-established.
      expect(watch.connections).toBeGreaterThan(connectionsBefore);
    } finally {
      watch.stop();
    }
  },
  120_000,
);
