// The chart as a user installs it (issue 14 item 3): `helm install` with only the
// image values changed, on nodes that run real kubelets and containerd, the image
// built here (npm run image) and loaded into every node. The controller Deployment
// and the agent DaemonSet run as pods; the tutorial's volume becomes Ready with the
// agent working inside its container (privileged, host network, /dev, Bidirectional
// mount propagation) and its engines inside the engine host's pod (FUSE + loop).
// Local harness only: the image is loaded into the harness's nodes.
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { repoRoot } from './harness/paths.ts';
import {
  controllerLease,
  helmInstall,
  leaseHolder,
  localImage,
  pods,
  podReady as ready,
  release,
} from './lib/chart.ts';
import { external, followLogs, kubectl, useCluster } from './lib/cluster.ts';
import { eventually } from './lib/eventually.ts';
import { execInNode } from './lib/nodes.ts';
import { deploy, freshDisks, waitReady } from './lib/volumes.ts';

jest.setTimeout(300_000);
const describeLocal = external ? describe.skip : describe;
useCluster();
const ns = `e2e-chart-${process.pid}`;
const nodes = ['master', 'backup'];

describeLocal('the Helm chart as a user installs it, on real kubelets', () => {
  let image: { repository: string; tag: string };

  beforeAll(async () => {
    // The host-process shortcut (npm run cluster:deploy) of other suites must not run beside the pods.
    await deploy('undeploy').catch(() => undefined);
    await freshDisks();
    image = await localImage();
    await kubectl(['create', 'namespace', ns]);
  }, 300_000);

  afterAll(async () => {
    // Volumes go while their agents run (they take the engines down and unmount);
    // then the release goes back to the shortcut's shape (no pods), and the nodes
    // are left as they booted.
    await kubectl(['delete', 'rv', '--all', '-n', ns, '--timeout=90s']).catch(() => undefined);
    await kubectl(['delete', 'namespace', ns, '--wait=false']).catch(() => undefined);
    await deploy('deploy').catch(() => undefined);
    await deploy('undeploy').catch(() => undefined);
    await freshDisks().catch(() => undefined);
  }, 300_000);

  test('helm install with only the image values: a Ready controller Deployment (one leader), an agent and an engine host pod per node', async () => {
    const t0 = Date.now();
    await helmInstall(image);
    const installSeconds = (Date.now() - t0) / 1000;
    console.log(`helm install --wait: ${installSeconds.toFixed(1)} s`);

    // helm's --wait counts a Deployment ready with maxUnavailable (1) of its pods not Ready
    // yet (CI: returned after 7.5 s with the second controller still starting), and the same
    // for a DaemonSet; it does not wait for an OnDelete one (the engine host) at all: all
    // three are waited for here.
    const controllers = await eventually(
      async () => {
        const ps = await pods('controller');
        expect(ps).toHaveLength(2);
        for (const p of ps) {
          expect(p.status.phase).toBe('Running');
          expect(ready(p)).toBe(true);
          expect(p.status.containerStatuses?.[0]?.image).toContain(image.tag);
        }
        return ps;
      },
      { timeoutMs: 60_000, what: 'two Running, Ready controller pods' },
    );
    for (const component of ['node-agent', 'engine-host'] as const)
      await eventually(
        async () => {
          const ps = await pods(component);
          expect(ps.map((p) => p.spec.nodeName).sort()).toEqual([...nodes].sort());
          expect(ps.map((p) => ({ phase: p.status.phase, ready: ready(p) }))).toEqual(
            ps.map(() => ({ phase: 'Running', ready: true })),
          );
        },
        { timeoutMs: 60_000, what: `a Running, Ready ${component} pod on every node` },
      );

    // Leader election across the replicas: one holds the Lease and says so; the
    // other stands by. Deleting the leader's pod hands the Lease to the other.
    const holder = await eventually(
      async () => {
        const h = await leaseHolder();
        expect(controllers.map((p) => p.metadata.name)).toContain(h);
        return h!;
      },
      { timeoutMs: 30_000, what: 'a controller pod holding the Lease' },
    );
    const standby = controllers.find((p) => p.metadata.name !== holder)!.metadata.name;
    const logs = async (pod: string) => (await kubectl(['logs', '-n', release.namespace, pod])).stdout;
    expect(await logs(holder)).toContain('Became leader');
    expect(await logs(standby)).not.toContain('Became leader');
    // What the leader prints while it shuts down is gone with its pod: follow it.
    const leaving = followLogs(release.namespace, holder);
    const deleted = Date.now();
    await kubectl(['delete', 'pod', '-n', release.namespace, holder, '--wait=false']);
    try {
      await eventually(async () => expect(await leaseHolder()).toBe(standby), {
        timeoutMs: 30_000,
        what: `the Lease handed to ${standby}`,
      });
      console.log(
        `leader's pod deleted → the standby holds the Lease: ${((Date.now() - deleted) / 1000).toFixed(1)} s`,
      );
      // It handed the Lease back rather than letting it expire.
      await eventually(() => expect(leaving.text()).toContain('Handed the Lease back'), {
        timeoutMs: 10_000,
        what: `${holder} logging that it handed the Lease back`,
      });
    } catch (err) {
      const lease = await controllerLease('yaml');
      console.log(
        `the leaving leader ${holder}:\n${leaving.text()}\nthe standby ${standby}:\n${await logs(standby)}\nthe Lease:\n${lease.stdout}`,
      );
      throw err;
    } finally {
      leaving.stop();
    }
    // The log line follows the Lease write (and the kubelet's log file follows the process).
    await eventually(async () => expect(await logs(standby)).toContain('Became leader'), {
      timeoutMs: 10_000,
      what: `${standby} logging that it became leader`,
    });
    // The Deployment makes a new replica, which stands by.
    await eventually(
      async () => {
        const now = await pods('controller');
        expect(now).toHaveLength(2);
        expect(now.every(ready)).toBe(true);
      },
      { timeoutMs: 120_000, what: 'two Ready controller pods again' },
    );
  });

  test('kubectl apply -f examples/mysql-volume.yaml: Ready, with the agent and its engine working inside the pod', async () => {
    await kubectl(['apply', '-f', join(repoRoot, 'examples/storage-pool.yaml')]);
    await kubectl(['apply', '-n', ns, '-f', join(repoRoot, 'examples/mysql-volume.yaml')]);
    const rv = await waitReady(ns, 'mysql', 'master', 180_000);
    expect(rv.status?.replicas?.map((r) => r.node).sort()).toEqual(['backup', 'master']);

    const podOn = async (component: 'node-agent' | 'engine-host', node: string) =>
      (await pods(component)).find((p) => p.spec.nodeName === node)!.metadata.name;
    const agent = await podOn('node-agent', 'master');
    const engineHost = await podOn('engine-host', 'master');
    const exec = async (pod: string, script: string) =>
      (await kubectl(['exec', '-n', release.namespace, pod, '--', 'sh', '-c', script])).stdout.trim();
    const inPod = (script: string) => exec(agent, script);
    const res = `${ns}.mysql`;

    // The engine is a process of the engine host's pod (its pid namespace), not of the
    // agent's container, and its FUSE export and loop device were made from inside it.
    expect(await exec(engineHost, `tr '\\0' ' ' < /proc/$(cat /run/tandem/${res}.pid)/cmdline`)).toContain('tandemadm');
    expect(await exec(engineHost, `findmnt -n -o FSTYPE /run/tandem/${res}.fuse`)).toBe('fuse');
    const device = await exec(engineHost, `losetup -j /run/tandem/${res}.fuse/disk -n -O NAME`);
    expect(device).toMatch(/^\/dev\/loop\d+$/);
    // The filesystem it mounted through /mnt/tandem-host reached the node (Bidirectional).
    expect(await inPod('findmnt -rn -o SOURCE,FSTYPE /mnt/tandem-host/mydata/mysql | tail -n1')).toBe(`${device} xfs`);
    const onNode = await execInNode('master', ['sh', '-c', 'findmnt -rn -o SOURCE,FSTYPE /mydata/mysql | tail -n1']);
    expect(onNode.stdout.trim()).toBe(`${device} xfs`);

    // Data written on the node goes through the pod's engine to the peer. Counters alone
    // do not make a replica's report due (at rest it is written once a minute), so ask its
    // agent for one, as a user wanting fresh counters would: each new value of
    // tandem.dev/report-requested is answered once, with a report written after it.
    let asked = 0;
    const received = async () => {
      const since = Date.now();
      await kubectl([
        'annotate',
        'rvr',
        '-n',
        ns,
        'mysql-backup',
        '--overwrite',
        `tandem.dev/report-requested=e2e-${++asked}`,
      ]);
      return await eventually(
        async () => {
          const out = await kubectl(['get', 'rvr', '-n', ns, 'mysql-backup', '-o', 'json']);
          const { status } = JSON.parse(out.stdout) as {
            status: { lastHeartbeatTime: string; counters: { nr: number } };
          };
          expect(Date.parse(status.lastHeartbeatTime)).toBeGreaterThanOrEqual(since);
          return status.counters.nr;
        },
        { timeoutMs: 15_000, intervalMs: 250, what: `a report of mysql-backup answering request e2e-${asked}` },
      );
    };
    const before = await received();
    await execInNode('master', [
      'sh',
      '-c',
      'head -c 4194304 /dev/urandom > /mydata/mysql/blob && echo "written on master through the agent pod" > /mydata/mysql/hello && sync',
    ]);
    expect((await execInNode('master', ['cat', '/mydata/mysql/hello'])).stdout).toBe(
      'written on master through the agent pod\n',
    );
    // Protocol C: sync returned after the Secondary had every byte (it counts them on receipt).
    expect(await received()).toBeGreaterThanOrEqual(before + 4 * 1024 * 1024);

    // Deleting the volume: the agent in the pod unmounts and takes its engine down.
    await kubectl(['delete', 'rv', 'mysql', '-n', ns, '--timeout=90s']);
    expect(
      (await execInNode('master', ['sh', '-c', 'findmnt -n /mydata/mysql | grep -c xfs; true'])).stdout.trim(),
    ).toBe('0');
    expect(await exec(engineHost, `ls /run/tandem/${res}.pid 2>/dev/null; true`)).toBe('');
  });
});
