// Workload failover (issue 16 item 2) on the local control plane: after the controller
// fails a volume over and its fence is recorded, it force-deletes the lost node's pods
// that mount the volume and deletes our VolumeAttachments of it to that node, and
// touches nothing else.
//
// The workload is made by hand, as the CSI driver's sidecars would leave it: a PV of
// driver tandem.dev whose volumeHandle is the volume's CSI id (NAMESPACE.NAME), a claim
// bound to it, a pod on the Primary's node that mounts the claim, and a VolumeAttachment
// to that node. No CSI node plugin or external-attacher runs here, so the pods never
// start (they wait for the attachment): what the release acts on is the pod object with
// spec.nodeName set, which is all a real lost node leaves behind too. Decoys: the same
// claim's pod and attachment on the other node, and another volume's pod and attachment
// on the lost node. The pods and attachments are watched; the fence's resourceVersion
// (the etcd revision of the write that recorded it) must precede every deletion's.
import { jest } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { external, kubeconfigPath, kubectl, useCluster } from './lib/cluster.ts';
import { installTandem, localImage, onPods, removeTandem } from './lib/chart.ts';
import { eventually } from './lib/eventually.ts';
import { healEverything, nodeAction } from './lib/failover.ts';
import { watchRoles } from './lib/role-watch.ts';
import { eventReasons, getRv, waitReady } from './lib/volumes.ts';
import { ResumableWatch } from './lib/watch.ts';
import { DRIVER_NAME, volumeId } from '../../src/csi/identity.ts';

jest.setTimeout(300_000);
const describeLocal = external ? describe.skip : describe;
useCluster();
const ns = `e2e-workload-${process.pid}`;
const nodes = ['master', 'backup'] as const;
const pv = { db: `${ns}-db`, other: `${ns}-other` };
let port: number | undefined;

const apply = (objects: object[]) =>
  kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }) });

function persistentVolume(name: string, handle: string, claim: string): object {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolume',
    metadata: { name },
    spec: {
      capacity: { storage: '1Gi' },
      accessModes: ['ReadWriteOnce'],
      persistentVolumeReclaimPolicy: 'Retain',
      storageClassName: '',
      claimRef: { namespace: ns, name: claim },
      csi: { driver: DRIVER_NAME, volumeHandle: handle, fsType: 'xfs' },
    },
  };
}

function claim(name: string, volumeName: string): object {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name, namespace: ns },
    spec: {
      accessModes: ['ReadWriteOnce'],
      storageClassName: '',
      volumeName,
      resources: { requests: { storage: '1Gi' } },
    },
  };
}

function pod(name: string, node: string, claimName: string, image: string): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns },
    spec: {
      nodeName: node,
      terminationGracePeriodSeconds: 30,
      // Tolerated for good: no taint-based eviction deletes them while the node is down, only the release.
      tolerations: [
        { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute' },
        { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute' },
      ],
      containers: [
        {
          name: 'app',
          image,
          imagePullPolicy: 'Never',
          command: ['sleep', 'infinity'],
          volumeMounts: [{ name: 'data', mountPath: '/data' }],
        },
      ],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName } }],
    },
  };
}

function attachment(name: string, node: string, pvName: string): object {
  return {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'VolumeAttachment',
    metadata: { name },
    spec: { attacher: DRIVER_NAME, nodeName: node, source: { persistentVolumeName: pvName } },
  };
}

type Seen = { name: string; rv: bigint; at: number; pv?: string | undefined; node?: string | undefined };

describeLocal("workload failover: the lost node's pods and attachments are freed once the fence is recorded", () => {
  const roles = watchRoles(ns);
  const watches: ResumableWatch[] = [];
  const deleted: { pods: Seen[]; attachments: Seen[] } = { pods: [], attachments: [] };
  let fenced: Seen | undefined;

  beforeAll(async () => {
    await installTandem([]);
    await kubectl(['create', 'namespace', ns]);
    await roles.start();
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'tandem.dev/v1alpha1',
        kind: 'ReplicatedVolume',
        metadata: { name: 'db', namespace: ns },
        spec: {
          pool: 'tutorial',
          protocol: 'C',
          replicas: [
            { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
            { node: 'backup', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
          ],
          primary: 'master',
        },
      }),
    });
    await waitReady(ns, 'db', 'master', 180_000);
    port = Number((await getRv(ns, 'db')).metadata.annotations?.['tandem.dev/port']);

    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfigPath());
    const now = () => Date.now();
    const pods = new ResumableWatch(kc, 'v1', 'Pod', ns, `/api/v1/namespaces/${ns}/pods`);
    pods.onEvent = (type, o) => {
      if (type === 'DELETED')
        deleted.pods.push({ name: o.metadata?.name ?? '', rv: BigInt(o.metadata?.resourceVersion ?? 0), at: now() });
    };
    const vas = new ResumableWatch(
      kc,
      'storage.k8s.io/v1',
      'VolumeAttachment',
      '',
      '/apis/storage.k8s.io/v1/volumeattachments',
    );
    vas.onEvent = (type, o) => {
      const spec = (o as { spec?: { nodeName?: string; source?: { persistentVolumeName?: string } } }).spec;
      if (type === 'DELETED')
        deleted.attachments.push({
          name: o.metadata?.name ?? '',
          rv: BigInt(o.metadata?.resourceVersion ?? 0),
          at: now(),
          pv: spec?.source?.persistentVolumeName,
          node: spec?.nodeName,
        });
    };
    const volumes = new ResumableWatch(
      kc,
      'tandem.dev/v1alpha1',
      'ReplicatedVolume',
      ns,
      `/apis/tandem.dev/v1alpha1/namespaces/${ns}/replicatedvolumes`,
    );
    volumes.onEvent = (_type, o) => {
      const fence = (o as { status?: { fence?: { node?: string } } }).status?.fence;
      if (!fenced && fence?.node === 'master')
        fenced = { name: o.metadata?.name ?? '', rv: BigInt(o.metadata?.resourceVersion ?? 0), at: now() };
    };
    for (const w of [pods, vas, volumes]) {
      watches.push(w);
      await w.start();
    }
  }, 300_000);

  afterEach(() => roles.check(), 60_000);

  afterAll(async () => {
    for (const w of watches) w.stop();
    await healEverything(nodes, port);
    await kubectl(['delete', 'pods', '--all', '-n', ns, '--force', '--grace-period=0']).catch(() => undefined);
    await kubectl(['delete', 'pvc', '--all', '-n', ns, '--wait=false']).catch(() => undefined);
    await kubectl(['delete', 'volumeattachment', `${pv.db}-master`, `${pv.db}-backup`, `${pv.other}-master`]).catch(
      () => undefined,
    );
    await kubectl(['delete', 'pv', pv.db, pv.other, '--wait=false']).catch(() => undefined);
    await removeTandem(ns, []);
  }, 300_000);

  (onPods ? test : test.skip)(
    'the controller may delete pods and attachments, and nothing more than it needs',
    async () => {
      const can = async (verb: string, resource: string, namespaced = true, ...extra: string[]) =>
        (
          await kubectl([
            'auth',
            'can-i',
            verb,
            resource,
            ...extra,
            ...(namespaced ? ['-n', ns] : []),
            '--as=system:serviceaccount:tandem-system:tandem-controller',
          ]).catch((e: Error) => ({ stdout: e.message }))
        ).stdout
          .trim()
          .split('\n')
          .pop();
      expect(await can('delete', 'pods')).toBe('yes');
      expect(await can('list', 'pods')).toBe('yes');
      expect(await can('create', 'pods')).toBe('no');
      expect(await can('patch', 'pods')).toBe('no');
      expect(await can('get', 'persistentvolumes', false)).toBe('yes');
      expect(await can('delete', 'persistentvolumes', false)).toBe('no');
      expect(await can('get', 'persistentvolumeclaims')).toBe('yes');
      expect(await can('delete', 'persistentvolumeclaims')).toBe('no');
      expect(await can('delete', 'volumeattachments.storage.k8s.io', false)).toBe('yes');
      expect(await can('patch', 'volumeattachments.storage.k8s.io', false)).toBe('no');
      expect(await can('create', 'volumeattachments.storage.k8s.io', false)).toBe('no');
      // A node's status (its volumesInUse), not the node itself.
      expect(await can('patch', 'nodes', false, '--subresource=status')).toBe('yes');
      expect(await can('patch', 'nodes', false)).toBe('no');
      expect(await can('delete', 'nodes', false)).toBe('no');
    },
  );

  test("stop the Primary's node: after the fence, its pod and attachment on the volume go, nothing else", async () => {
    const image = await localImage();
    const ref = `${image.repository}:${image.tag}`;
    await apply([
      persistentVolume(pv.db, volumeId(ns, 'db'), 'data-db'),
      persistentVolume(pv.other, volumeId(ns, 'other'), 'data-other'),
      claim('data-db', pv.db),
      claim('data-other', pv.other),
      pod('db-on-master', 'master', 'data-db', ref),
      pod('db-on-backup', 'backup', 'data-db', ref),
      pod('other-on-master', 'master', 'data-other', ref),
      attachment(`${pv.db}-master`, 'master', pv.db),
      attachment(`${pv.db}-backup`, 'backup', pv.db),
      attachment(`${pv.other}-master`, 'master', pv.other),
    ]);
    await eventually(
      async () => {
        const phases = (await kubectl(['get', 'pvc', '-n', ns, '-o', 'jsonpath={.items[*].status.phase}'])).stdout;
        expect(phases).toBe('Bound Bound');
      },
      { timeoutMs: 60_000, what: 'both claims Bound' },
    );
    // Before any failover nothing is released.
    expect((await getRv(ns, 'db')).status).not.toHaveProperty('lastWorkloadRelease');

    const t0 = Date.now();
    await nodeAction('stop', 'master');
    const rv = await eventually(
      async () => {
        const r = (await getRv(ns, 'db')) as Awaited<ReturnType<typeof getRv>> & {
          status?: {
            lastWorkloadRelease?: { node: string; epoch: number; pods: string[]; volumeAttachments: string[] };
          };
        };
        expect(r.status?.lastWorkloadRelease).toBeDefined();
        return r;
      },
      { timeoutMs: 90_000, intervalMs: 500, what: 'status.lastWorkloadRelease recorded' },
    );
    const tFreed = Date.now();
    const release = rv.status!.lastWorkloadRelease!;
    console.log(
      `workload failover: node stopped → release recorded ${((tFreed - t0) / 1000).toFixed(1)} s; ${JSON.stringify(release)}`,
    );
    expect(rv.status?.primary).toBe('backup');
    expect(rv.status?.lastFailover).toMatchObject({ from: 'master', to: 'backup' });
    expect(rv.status?.fence).toMatchObject({ node: 'master', by: 'tandem-controller' });
    expect(release).toMatchObject({
      node: 'master',
      epoch: rv.status?.lastFailover?.epoch,
      pods: [`${ns}/db-on-master`],
    });
    // Ours for sure; the attach-detach controller may have made its own (csi-<hash>) for the pod too.
    expect(release.volumeAttachments).toContain(`${pv.db}-master`);
    expect(release.volumeAttachments.every((a) => !a.startsWith(pv.other) && a !== `${pv.db}-backup`)).toBe(true);

    // Gone: the lost node's pod on the volume, and every attachment of the volume's PV to that node.
    const podNames = (await kubectl(['get', 'pods', '-n', ns, '-o', 'jsonpath={.items[*].metadata.name}'])).stdout
      .split(' ')
      .sort();
    expect(podNames).toEqual(['db-on-backup', 'other-on-master']);
    type Va = { metadata: { name: string }; spec: { nodeName: string; source: { persistentVolumeName?: string } } };
    const vas = (JSON.parse((await kubectl(['get', 'volumeattachments', '-o', 'json'])).stdout) as { items: Va[] })
      .items;
    const names = vas.map((v) => v.metadata.name);
    expect(names).not.toContain(`${pv.db}-master`);
    expect(names).toEqual(expect.arrayContaining([`${pv.db}-backup`, `${pv.other}-master`]));
    expect(vas.filter((v) => v.spec.source.persistentVolumeName === pv.db && v.spec.nodeName === 'master')).toEqual([]);

    // Recorded: the event names what was deleted.
    expect(await eventReasons(ns, 'db')).toEqual(expect.arrayContaining(['FailedOver', 'Fenced', 'WorkloadFreed']));
    const freed = (
      await kubectl([
        'get',
        'events',
        '-n',
        ns,
        '--field-selector',
        'involvedObject.name=db,reason=WorkloadFreed',
        '-o',
        'jsonpath={.items[*].message}',
      ])
    ).stdout;
    expect(freed).toContain(`${ns}/db-on-master`);
    expect(freed).toContain(`${pv.db}-master`);

    // Never before the fence: the write that recorded it precedes every deletion (etcd revisions).
    await eventually(() => expect(deleted.pods.map((d) => d.name)).toContain('db-on-master'), {
      timeoutMs: 10_000,
      what: 'the watch saw the pod deleted',
    });
    expect(fenced).toBeDefined();
    const ours = [
      ...deleted.pods.filter((d) => d.name === 'db-on-master'),
      ...deleted.attachments.filter((d) => d.name === `${pv.db}-master`),
    ];
    expect(ours).toHaveLength(2);
    // Every deletion seen (the attach-detach controller's own attachment included) came after the fence.
    for (const d of [...deleted.pods, ...deleted.attachments])
      expect({ name: d.name, afterFence: d.rv > fenced!.rv }).toEqual({ name: d.name, afterFence: true });
    console.log(
      `fence recorded at resourceVersion ${fenced!.rv}; deleted: ${[...deleted.pods, ...deleted.attachments].map((d) => `${d.name}@${d.rv} (+${d.at - fenced!.at} ms)`).join(', ')}`,
    );
    // The decoys were never deleted at all: only the volume's PV, only on the lost node.
    expect(deleted.pods.map((d) => d.name)).toEqual(['db-on-master']);
    expect(deleted.attachments.filter((d) => d.pv !== pv.db || d.node !== 'master')).toEqual([]);
  });

  (onPods ? test : test.skip)('a controller restart does not release again', async () => {
    const before = (await getRv(ns, 'db')) as { status?: { lastWorkloadRelease?: object } };
    expect(before.status?.lastWorkloadRelease).toBeDefined();
    // Every controller pod replaced: the new leader reconciles every volume from scratch.
    await kubectl([
      'delete',
      'pods',
      '-n',
      'tandem-system',
      '-l',
      'app.kubernetes.io/component=controller',
      '--wait=false',
    ]);
    await eventually(
      async () => {
        const ready = (
          await kubectl([
            'get',
            'pods',
            '-n',
            'tandem-system',
            '-l',
            'app.kubernetes.io/component=controller',
            '-o',
            'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}',
          ])
        ).stdout;
        expect(ready).toContain('True');
      },
      { timeoutMs: 120_000, what: 'a controller Ready again' },
    );
    // The Lease (10 s) changes hands and the new leader looks at every volume.
    await new Promise((r) => setTimeout(r, 20_000));
    const after = (await getRv(ns, 'db')) as { status?: { lastWorkloadRelease?: object } };
    expect(after.status?.lastWorkloadRelease).toEqual(before.status?.lastWorkloadRelease);
    const reasons = await eventReasons(ns, 'db');
    expect(reasons.filter((r) => r === 'WorkloadFreed')).toHaveLength(1);
    const podNames = (await kubectl(['get', 'pods', '-n', ns, '-o', 'jsonpath={.items[*].metadata.name}'])).stdout
      .split(' ')
      .sort();
    expect(podNames).toEqual(['db-on-backup', 'other-on-master']);
  });
});
