// Issue 16 item 1, as a user meets it: the chart runs the CSI driver as pods on the real
// kubelets — its controller with external-provisioner and external-attacher (built from
// their Go modules), its node plugin on every node, registered with each kubelet through
// plugins_registry — and a StorageClass + PVC + pod get a replicated, mounted volume. The
// pod then moves to the other node: ControllerPublish makes that node Primary, and the
// data is there. A second (xfs) PVC grows offline (its pod gone, the claim patched bigger,
// a new pod): external-resizer's ControllerExpandVolume grows both replicas, the node
// plugin re-attaches the device and grows the filesystem, and the data is still there.
// Deleting a PVC deletes the ReplicatedVolume and its backing files.
import { jest } from '@jest/globals';
import { parseQuantity } from '../../src/api/quantity.ts';
import { TOPOLOGY_KEY } from '../../src/csi/identity.ts';
import { external, kubectl, useCluster } from './lib/cluster.ts';
import { eventually } from './lib/eventually.ts';
import {
  filePoolClass,
  helmInstall,
  inPodNetwork,
  localImage,
  pods,
  podReady,
  release,
  removeCsiSuite,
} from './lib/chart.ts';
import { execInNode } from './lib/nodes.ts';
import { deploy, freshDisks, getRv, readyCondition } from './lib/volumes.ts';

jest.setTimeout(900_000);
const describeLocal = external ? describe.skip : describe;
useCluster();
const ns = `e2e-csi-pods-${process.pid}`;
const pool = 'e2e-csi-pods';
const sc = 'e2e-tandem-files';
const poolDir = (node: string) => `/var/lib/tandem/pools/e2e-csi-pods-${node}`;
const nodes = ['master', 'backup'] as const;

type CsiNode = { spec: { drivers?: { name: string; nodeID: string; topologyKeys?: string[] }[] | null } };
type Pv = {
  spec: { csi: { driver: string; volumeHandle: string }; capacity: { storage: string } };
  status: { phase: string };
};
type Pvc = {
  spec: { volumeName: string };
  status: { capacity?: { storage?: string }; conditions?: { type: string; status: string; message?: string }[] };
};
type Va = { spec: { nodeName: string; source: { persistentVolumeName?: string } }; status?: { attached: boolean } };

const json = async <T>(args: string[]): Promise<T> => JSON.parse((await kubectl([...args, '-o', 'json'])).stdout) as T;

function podSpec(name: string, node: string | undefined, command: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns },
    spec: {
      ...(node ? { nodeSelector: { 'kubernetes.io/hostname': node } } : {}),
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'app',
          image: '',
          command: ['sh', '-c', command],
          securityContext: { runAsUser: 0 },
          volumeMounts: [{ name: 'data', mountPath: '/data' }],
        },
      ],
      volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data' } }],
    },
  };
}

describeLocal('the CSI driver as pods: StorageClass, PVC, pod', () => {
  let image = '';

  beforeAll(async () => {
    await deploy('undeploy').catch(() => undefined);
    await freshDisks([]);
    const img = await localImage();
    image = `${img.repository}:${img.tag}`;
    const t0 = Date.now();
    await helmInstall(img, { csi: true });
    console.log(`helm install with the CSI driver's pods: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    await kubectl(['create', 'namespace', ns]);
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [...filePoolClass(pool, sc, nodes, poolDir)],
      }),
    });
  }, 600_000);

  afterAll(async () => {
    await kubectl(['delete', 'storageclass', `${sc}-xfs`, '--ignore-not-found']).catch(() => undefined);
    await removeCsiSuite({ ns, pool, sc, nodes, dir: poolDir });
  }, 600_000);

  test("every node's kubelet registered the driver (CSINode) and its pods are Ready", async () => {
    for (const c of ['csi-controller', 'csi-node'] as const) {
      const ps = await pods(c);
      // The controller too runs one replica per node (the sidecars elect a leader).
      expect(ps.length).toBe(nodes.length);
      expect(ps.every(podReady)).toBe(true);
    }
    for (const n of nodes) {
      const driver = await eventually(
        async () => {
          const d = (await json<CsiNode>(['get', 'csinode', n])).spec.drivers?.find((x) => x.name === 'tandem.dev');
          if (!d) throw new Error(`CSINode ${n} does not list tandem.dev yet`);
          return d;
        },
        { timeoutMs: 60_000, what: `the kubelet on ${n} to register tandem.dev` },
      );
      expect(driver.nodeID).toBe(n);
      expect(driver.topologyKeys).toEqual([TOPOLOGY_KEY]);
    }
  });

  let rvName = '';
  let first = '';

  test('a PVC and a pod: provisioned, attached on the pod node (its Primary), formatted, mounted', async () => {
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'v1',
            kind: 'PersistentVolumeClaim',
            metadata: { name: 'data', namespace: ns },
            spec: {
              storageClassName: sc,
              accessModes: ['ReadWriteOnce'],
              resources: { requests: { storage: '64Mi' } },
            },
          },
          (() => {
            const p = podSpec(
              'writer',
              undefined,
              'echo "written on $NODE" > /data/hello && sync && exec sleep 100000',
            );
            p.spec.containers[0]!.image = image;
            Object.assign(p.spec.containers[0]!, {
              env: [{ name: 'NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
            });
            return p;
          })(),
        ],
      }),
    });
    const t0 = Date.now();
    await kubectl(['wait', '-n', ns, 'pod/writer', '--for=condition=Ready', '--timeout=240s']);
    console.log(`PVC + pod to Running: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    first = (await kubectl(['get', 'pod', '-n', ns, 'writer', '-o', 'jsonpath={.spec.nodeName}'])).stdout;
    expect(nodes).toContain(first);
    const pvName = (await kubectl(['get', 'pvc', '-n', ns, 'data', '-o', 'jsonpath={.spec.volumeName}'])).stdout;
    const pv = await json<Pv>(['get', 'pv', pvName]);
    expect(pv.spec.csi.driver).toBe('tandem.dev');
    const [rvNs, name] = pv.spec.csi.volumeHandle.split('.') as [string, string];
    expect(rvNs).toBe(release.namespace);
    rvName = name;
    const rv = await getRv(release.namespace, rvName);
    expect(rv.status?.primary).toBe(first);
    // Running needs the Primary attached, not the pair in sync: Ready follows once the
    // initial sync is done (CI saw Ready=False at the moment the pod ran).
    await eventually(async () => expect(readyCondition(await getRv(release.namespace, rvName))?.status).toBe('True'), {
      timeoutMs: 120_000,
      what: `${rvName} Ready`,
    });
    const vas = (await json<{ items: Va[] }>(['get', 'volumeattachments'])).items.filter(
      (v) => v.spec.source.persistentVolumeName === pvName,
    );
    expect(vas.map((v) => [v.spec.nodeName, v.status?.attached])).toEqual([[first, true]]);
    expect((await kubectl(['exec', '-n', ns, 'writer', '--', 'cat', '/data/hello'])).stdout.trim()).toBe(
      `written on ${first}`,
    );
    // The filesystem is on the replicated device, mounted nosuid,nodev by the node plugin.
    const mounts = (await kubectl(['exec', '-n', ns, 'writer', '--', 'cat', '/proc/mounts'])).stdout;
    expect(mounts).toMatch(/ \/data ext4 [^ ]*nosuid,nodev/);
  });

  test('the pod on the other node: the volume switches its Primary there and the data is there', async () => {
    const second = first === 'master' ? 'backup' : 'master';
    await kubectl(['delete', 'pod', '-n', ns, 'writer', '--wait=true', '--timeout=120s']);
    const p = podSpec('reader', second, 'exec sleep 100000');
    p.spec.containers[0]!.image = image;
    const t0 = Date.now();
    await kubectl(['apply', '-f', '-'], { input: JSON.stringify(p) });
    await kubectl(['wait', '-n', ns, 'pod/reader', '--for=condition=Ready', '--timeout=240s']);
    console.log(`pod moved to ${second} and Running: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect((await kubectl(['exec', '-n', ns, 'reader', '--', 'cat', '/data/hello'])).stdout.trim()).toBe(
      `written on ${first}`,
    );
    const rv = await getRv(release.namespace, rvName);
    expect(rv.status?.primary).toBe(second);
  });

  /** `df -B1 /data` in a pod: the filesystem's size in bytes. */
  const dfTotal = async (pod: string) => {
    const out = (await kubectl(['exec', '-n', ns, pod, '--', 'df', '-B1', '/data'])).stdout.trim().split('\n');
    return Number(out[1]?.split(/\s+/)[1]);
  };

  // xfs, grown online by xfs_growfs (CAP_SYS_ADMIN). ext4's online resize needs
  // CAP_SYS_RESOURCE, which this machine's containers lack even when privileged (resize2fs:
  // "Permission denied to resize filesystem"); the driver runs the same for both.
  // mkfs.xfs wants more than 300 MB.
  test('offline expansion: pod gone, PVC patched bigger, PV and PVC grow, a new pod on the node that kept the device sees the bigger filesystem and the data', async () => {
    const xfs = `${sc}-xfs`;
    const claim = (storage: string) => ({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'grow', namespace: ns },
      spec: { storageClassName: xfs, accessModes: ['ReadWriteOnce'], resources: { requests: { storage } } },
    });
    const growPod = (name: string, node: string | undefined, command: string) => {
      const p = podSpec(name, node, command);
      p.spec.containers[0]!.image = image;
      p.spec.volumes[0]!.persistentVolumeClaim.claimName = 'grow';
      return p;
    };
    const [, cls] = filePoolClass(pool, xfs, nodes, poolDir) as [object, { parameters: Record<string, string> }];
    cls.parameters['csi.storage.k8s.io/fstype'] = 'xfs';
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          cls,
          claim('320Mi'),
          growPod('grow-1', undefined, 'seq 1 100000 > /data/numbers && sync && exec sleep 100000'),
        ],
      }),
    });
    await kubectl(['wait', '-n', ns, 'pod/grow-1', '--for=condition=Ready', '--timeout=240s']);
    const before = await dfTotal('grow-1');
    const sum = async (pod: string) =>
      (await kubectl(['exec', '-n', ns, pod, '--', 'sha256sum', '/data/numbers'])).stdout.split(' ')[0];
    const written = await sum('grow-1');
    const pvName = (await kubectl(['get', 'pvc', '-n', ns, 'grow', '-o', 'jsonpath={.spec.volumeName}'])).stdout;
    const volume = (await json<Pv>(['get', 'pv', pvName])).spec.csi.volumeHandle.split('.')[1]!;
    // The pod's node stays Primary with its kernel device attached (unpublishing keeps the
    // role): a pod there again finds that device at the old size, which NodeStage re-attaches.
    const primary = (await getRv(release.namespace, volume)).status?.primary;
    expect(nodes).toContain(primary);
    await kubectl(['delete', 'pod', '-n', ns, 'grow-1', '--wait=true', '--timeout=120s']);

    const t0 = Date.now();
    await kubectl(['apply', '-f', '-'], { input: JSON.stringify(claim('384Mi')) });
    const want = 384 << 20;
    // external-resizer → ControllerExpandVolume (refused while the attachment lingers,
    // retried) → spec.size grows → both replicas report the size → the PV's capacity.
    await eventually(
      async () => expect(parseQuantity((await json<Pv>(['get', 'pv', pvName])).spec.capacity.storage)).toBe(want),
      { timeoutMs: 240_000, what: `PV ${pvName} to show 384Mi` },
    );
    console.log(`PVC patched to PV at 384Mi: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const rv = await json<{ spec: { size: string }; status?: { replicas?: { node: string; sizeBytes?: number }[] } }>([
      'get',
      'rv',
      '-n',
      release.namespace,
      volume,
    ]);
    expect(rv.spec.size).toBe(String(want));
    expect(rv.status?.replicas?.map((r) => (r.sizeBytes ?? 0) >= want)).toEqual([true, true]);
    // The filesystem grows on the node, when a pod mounts the claim again.
    console.log(
      `PVC before the new pod: ${JSON.stringify((await json<Pvc>(['get', 'pvc', '-n', ns, 'grow'])).status)}`,
    );

    const t1 = Date.now();
    await kubectl(['apply', '-f', '-'], { input: JSON.stringify(growPod('grow-2', primary, 'exec sleep 100000')) });
    await kubectl(['wait', '-n', ns, 'pod/grow-2', '--for=condition=Ready', '--timeout=240s']);
    console.log(`new pod Running on the grown volume: ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    expect(await sum('grow-2')).toBe(written);
    const after = await dfTotal('grow-2');
    console.log(`df /data: ${before} bytes at 320Mi, ${after} bytes at 384Mi`);
    // The filesystem's own overhead aside, it has grown by about the 64 MiB added.
    expect(after - before).toBeGreaterThan(56 << 20);
    await eventually(
      async () => {
        const pvc = await json<Pvc>(['get', 'pvc', '-n', ns, 'grow']);
        expect({
          capacity: parseQuantity(pvc.status.capacity?.storage ?? '0'),
          pending: pvc.status.conditions?.filter((c) => c.type === 'FileSystemResizePending') ?? [],
        }).toEqual({ capacity: want, pending: [] });
      },
      { timeoutMs: 120_000, what: 'the PVC to report 384Mi with no filesystem resize pending' },
    );

    // Gone again before the next test looks at the pool's directories.
    await kubectl(['delete', 'pod', '-n', ns, 'grow-2', '--wait=true', '--timeout=120s']);
    await kubectl(['delete', 'pvc', '-n', ns, 'grow', '--wait=true', '--timeout=120s']);
    await eventually(
      async () => {
        const out = (await kubectl(['get', 'rv', '-n', release.namespace, '-o', 'name'])).stdout;
        if (out.includes(volume)) throw new Error(`${volume} still exists`);
      },
      { timeoutMs: 120_000, what: 'the grown volume to go' },
    );
    await kubectl(['delete', 'storageclass', xfs, '--ignore-not-found']);
  });

  test('deleting the PVC deletes the volume and its backing files on both nodes', async () => {
    await kubectl(['delete', 'pod', '-n', ns, 'reader', '--wait=true', '--timeout=120s']);
    await kubectl(['delete', 'pvc', '-n', ns, 'data', '--wait=true', '--timeout=120s']);
    await eventually(
      async () => {
        const out = (await kubectl(['get', 'rv', '-n', release.namespace, '-o', 'name'])).stdout;
        if (out.includes(rvName)) throw new Error(`${rvName} still exists`);
      },
      { timeoutMs: 120_000, what: 'the ReplicatedVolume to go' },
    );
    for (const n of nodes)
      await eventually(
        async () => {
          const left = (await execInNode(n, ['ls', '-A', poolDir(n)]).catch(() => ({ stdout: '' }))).stdout.trim();
          if (left !== '') throw new Error(`${n}: ${left}`);
        },
        { timeoutMs: 60_000, what: `the backing files on ${n} to go` },
      );
  });

  test("the driver containers' liveness probe answers: no restarts through the suite, /healthz 200 on every pod", async () => {
    for (const component of ['csi-controller', 'csi-node'] as const)
      for (const pod of await pods(component)) {
        const driver = pod.status.containerStatuses?.find((c) => c.name === 'driver');
        expect({ pod: pod.metadata.name, restarts: driver?.restartCount }).toEqual({
          pod: pod.metadata.name,
          restarts: 0,
        });
        // The kubelet's probe, from the pod's node: its own GET of the pod's /healthz.
        // (inPodNetwork runs it in sh -c '…': no single quote inside.)
        const get =
          'fetch(\\"http://127.0.0.1:9810/healthz\\").then((r) => r.text()).then((t) => process.stdout.write(t))';
        const body = await inPodNetwork(pod, `${process.execPath} -e "${get}"`);
        expect(JSON.parse(body)).toMatchObject({ ok: true });
      }
  });
});
