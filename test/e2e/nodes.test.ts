// Simulated nodes against the real node lifecycle controller: a node is its own
// machine (devices, run dir, hostname, IP), a stopped node becomes
// Ready=Unknown with the unreachable taint within the grace period, and a
// partition cuts TCP between namespaces while processes keep running.
// Local harness only: an external cluster's nodes are not ours to stop.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { kubernetesVersion, net } from './harness/paths.ts';
import { external, harness, localOnlyTest, timing, useCluster } from './lib/cluster.ts';
import { eventually } from './lib/eventually.ts';
import { execInNode, exited, nodeHealth, printed, startTcpServer, tcpProbe } from './lib/nodes.ts';

const cluster = useCluster();
const masterIp = net.nodeIp(0);
const backupIp = net.nodeIp(1);
const unreachable = ['node.kubernetes.io/unreachable:NoExecute', 'node.kubernetes.io/unreachable:NoSchedule'];

/** Waits (polling fast, so the time it took is measured closely) for the controller's verdict on a lost node. */
function becomesUnreachable(name: string): Promise<void> {
  return eventually(
    async () => {
      const h = await nodeHealth(cluster.core, name);
      expect(h.ready).toBe('Unknown');
      expect(h.taints).toEqual(expect.arrayContaining(unreachable));
    },
    { timeoutMs: 30_000, intervalMs: 250, what: `${name} Ready=Unknown with the unreachable taints` },
  );
}

/** Tasks in a node's cgroup (freezer hierarchy): its kubelet, containerd, pods and all they started. */
function nodeTasks(name: string): number {
  const count = (dir: string): number =>
    readFileSync(join(dir, 'tasks'), 'utf8').split('\n').filter(Boolean).length +
    readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .reduce((n, e) => n + count(join(dir, e.name)), 0);
  const dir = `/sys/fs/cgroup/freezer/tandem-e2e/${name}`;
  return existsSync(dir) ? count(dir) : 0;
}

// Whatever a failed test leaves behind, the next one starts from a healthy cluster.
afterEach(async () => {
  if (!external) await harness('up');
}, 60_000);

localOnlyTest('each node is a machine of its own: IP, hostname, /dev/sdb1 and /dev/sdb2, /run/tandem', async () => {
  for (const [name, ip] of [
    ['master', masterIp],
    ['backup', backupIp],
  ] as const) {
    expect(await nodeHealth(cluster.core, name)).toEqual({ ready: 'True', taints: [], internalIp: ip });
    // Ready because its own kubelet says so, over its own containerd.
    const info = (await cluster.core.readNode({ name })).status?.nodeInfo;
    expect(info?.kubeletVersion).toBe(kubernetesVersion);
    expect(info?.containerRuntimeVersion).toMatch(/^containerd:\/\//);
    const r = await execInNode(name, [
      'sh',
      '-c',
      'hostname; ip -4 -o addr show dev eth0; stat -c "%F" /dev/sdb1 /dev/sdb2; blockdev --getsize64 /dev/sdb1 /dev/sdb2',
    ]);
    const [hostname, addr, type1, type2, size1, size2] = r.stdout.trim().split('\n');
    expect(hostname).toBe(name);
    expect(addr).toContain(`inet ${ip}/24`);
    expect([type1, type2]).toEqual(['block special file', 'block special file']);
    expect([Number(size1), Number(size2)]).toEqual([1024 ** 3, 256 * 1024 ** 2]);
  }
  // Each node's /dev/sdb1 is a different device, and none appears in the host's /dev.
  const dev = async (n: string) => (await execInNode(n, ['stat', '-c', '%t:%T', '/dev/sdb1'])).stdout.trim();
  expect(await dev('master')).not.toBe(await dev('backup'));
  expect(existsSync('/dev/sdb1')).toBe(false);
  // /run/tandem is private to the node.
  await execInNode('master', ['sh', '-c', 'echo master > /run/tandem/who']);
  expect((await execInNode('master', ['cat', '/run/tandem/who'])).stdout).toBe('master\n');
  expect((await execInNode('backup', ['sh', '-c', 'ls /run/tandem'])).stdout).toBe('');
});

localOnlyTest(
  'stopping a node kills its processes; within the grace period it is Ready=Unknown and tainted unreachable; starting it makes it Ready',
  async () => {
    const sleeper = startTcpServer('master', 7001);
    await printed(sleeper, 'listening');

    expect(nodeTasks('master')).toBeGreaterThan(0);
    const stoppedAt = Date.now();
    await harness('node', 'stop', 'master');
    expect((await exited(sleeper)).code).not.toBe(0);
    // All at once, as a power cut: kubelet, containerd, its shims and every container.
    expect(nodeTasks('master')).toBe(0);

    await becomesUnreachable('master');
    const elapsedS = (Date.now() - stoppedAt) / 1000;
    // The last lease renewal was at most one heartbeat before the stop; the controller
    // notices within one monitor period after the grace period; 2 s for everything else.
    expect(elapsedS).toBeGreaterThanOrEqual(timing.nodeMonitorGraceSeconds - timing.heartbeatSeconds);
    expect(elapsedS).toBeLessThanOrEqual(timing.nodeMonitorGraceSeconds + timing.nodeMonitorPeriodSeconds + 2);
    // The other node is not affected, and a stopped node refuses commands.
    expect((await nodeHealth(cluster.core, 'backup')).ready).toBe('True');
    await expect(execInNode('master', ['true'])).rejects.toThrow('Node master is stopped');

    await harness('node', 'start', 'master');
    await eventually(
      async () => expect(await nodeHealth(cluster.core, 'master')).toMatchObject({ ready: 'True', taints: [] }),
      {
        timeoutMs: 30_000,
        what: 'master Ready again without taints',
      },
    );
    // A fresh boot: the old run dir is gone.
    expect((await execInNode('master', ['sh', '-c', 'ls /run/tandem'])).stdout).toBe('');
  },
  90_000,
);

localOnlyTest(
  'partitioning a node blocks TCP to and from it while its processes keep running; heal restores it',
  async () => {
    const server = startTcpServer('master', 7002);
    const backupServer = startTcpServer('backup', 7003);
    try {
      await Promise.all([printed(server, 'listening'), printed(backupServer, 'listening')]);
      expect(await tcpProbe('backup', masterIp, 7002)).toBe('hello from master');
      expect(await tcpProbe('master', backupIp, 7003)).toBe('hello from backup');

      await harness('node', 'partition', 'master');
      expect(await tcpProbe('backup', masterIp, 7002)).toBe('timeout');
      expect(await tcpProbe('master', backupIp, 7003)).toBe('timeout');
      // Its kubelet is cut off too, so the controller reacts as to a lost node.
      await becomesUnreachable('master');
      expect(server.exitCode).toBeNull();

      await harness('node', 'heal', 'master');
      // The same server process answers again: it ran through the partition.
      expect(await tcpProbe('backup', masterIp, 7002)).toBe('hello from master');
      expect(await tcpProbe('master', backupIp, 7003)).toBe('hello from backup');
      expect(await nodeHealth(cluster.core, 'master')).toMatchObject({ ready: 'True', taints: [] });
    } finally {
      server.stdin?.end();
      backupServer.stdin?.end();
      await Promise.all([exited(server), exited(backupServer)]);
    }
  },
  90_000,
);
