// Engines outlive the agent (issue 14 item 4), on real kubelets with the chart as a
// user installs it: the engines run in the engine host's pod (a DaemonSet with
// updateStrategy OnDelete), the agent asks it to run tandemadm. While an application
// writes numbered records with O_DSYNC on the Primary's filesystem, the agent is
//   - restarted with `kubectl rollout restart daemonset/tandem-node-agent`,
//   - upgraded with `helm upgrade` to another image name (the engine host's template
//     changes too, and its pod stays: OnDelete),
//   - killed with `kill -9` of its main process (the kubelet restarts the container);
// every time no write fails, the new agent adopts the running engines (the same
// processes, no engine action in its log, its heartbeat on the replicas), the
// volume stays Ready with the same Primary and epoch and no role change
// (status.lastRoleChange unchanged, and the role audit sees no change at all);
// at the end every acknowledged record is on the volume.
// It also prints the resident memory of the engines and of the agent.
// Local harness only: the image is loaded into the harness's nodes.
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { repoRoot } from './harness/paths.ts';
import { helmInstall, localImage, pods, podReady as ready, type Pod, release } from './lib/chart.ts';
import { external, kubectl, useCluster } from './lib/cluster.ts';
import { eventually } from './lib/eventually.ts';
import { type Ack, RecordWriter, recordsOn } from './lib/failover.ts';
import { execInNode } from './lib/nodes.ts';
import { watchRoles } from './lib/role-watch.ts';
import { deploy, freshDisks, type Rv, waitReady } from './lib/volumes.ts';

jest.setTimeout(300_000);
const describeLocal = external ? describe.skip : describe;
useCluster();
const agentDs = `${release.name}-node-agent`;
const ns = `e2e-engine-host-${process.pid}`;
const mount = '/mydata/eh';
const nodes = ['master', 'backup'] as const;

const restarts = (p: Pod) => p.status.containerStatuses?.[0]?.restartCount ?? 0;
const on = (ps: Pod[], node: string) => ps.find((p) => p.spec.nodeName === node);

type Proc = { pid: number; start: string; rssKiB: number; cmd: string };

/**
 * Processes of the node (its network namespace: the pods are host-network) whose command
 * line matches `pattern`, with their start time (proc(5) stat field 22) and VmRSS.
 */
async function procs(node: string, pattern: string): Promise<Proc[]> {
  const script = `self=$(readlink /proc/self/ns/net)
for d in /proc/[0-9]*; do
  c=$(tr '\\0\\n' '  ' < $d/cmdline 2>/dev/null) || continue
  case "$c" in *${pattern}*) ;; *) continue ;; esac
  [ "$(readlink $d/ns/net 2>/dev/null)" = "$self" ] || continue
  printf '%s %s %s %s\\n' "\${d#/proc/}" "$(sed 's/.*) //' $d/stat | cut -d' ' -f20)" "$(awk '/^VmRSS/{print $2}' $d/status)" "$c"
done`;
  const out = (await execInNode(node, ['sh', '-c', script])).stdout;
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [pid, start, rss, ...cmd] = l.split(' ');
      return { pid: Number(pid), start: start!, rssKiB: Number(rss), cmd: cmd.join(' ').trim() };
    })
    .filter((p) => p.cmd.includes(pattern) && !p.cmd.includes('/proc/self/ns/net')); // not this script
}

const engines = (node: string) => procs(node, '--__engine');
const agentProcs = (node: string) => procs(node, 'tandem-node-agent.js');
const identity = (ps: Proc[]) => ps.map((p) => `${p.pid}@${p.start}`).sort();
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

function volume(name: string): string {
  return JSON.stringify({
    apiVersion: 'tandem.dev/v1alpha1',
    kind: 'ReplicatedVolume',
    metadata: { name, namespace: ns },
    spec: {
      pool: 'tutorial',
      protocol: 'C',
      filesystem: 'xfs',
      mountPath: mount,
      replicas: [
        { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
        { node: 'backup', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
      ],
    },
  });
}

/** The replica's heartbeat (written by the agent that runs now). */
async function heartbeat(node: string): Promise<number> {
  const out = await kubectl(['get', 'rvr', `db-${node}`, '-n', ns, '-o', 'jsonpath={.status.lastHeartbeatTime}']);
  return Date.parse(out.stdout);
}

describeLocal('engines outlive the agent: restart, upgrade and kill -9 of the agent under a write stream', () => {
  const roles = watchRoles(ns);
  let image: { repository: string; tag: string };
  let writer: RecordWriter;

  const install = (tag: string) => helmInstall({ repository: image.repository, tag });

  beforeAll(async () => {
    // The host-process shortcut (npm run cluster:deploy) must not run beside the pods.
    await deploy('undeploy').catch(() => undefined);
    await freshDisks([mount]);
    image = await localImage();
    await install(image.tag);
    await kubectl(['apply', '-f', join(repoRoot, 'examples/storage-pool.yaml')]);
    await kubectl(['create', 'namespace', ns]);
    await roles.start();
    await kubectl(['apply', '-f', '-'], { input: volume('db') });
    await waitReady(ns, 'db', 'master', 180_000);
    await eventually(
      async () => expect((await execInNode('master', ['stat', '-f', '-c', '%T', mount])).stdout.trim()).toBe('xfs'),
      { timeoutMs: 60_000, what: `xfs mounted on master at ${mount}` },
    );
    writer = new RecordWriter('master', mount, 0);
    await writer.waitAcks(100);
  }, 600_000);

  afterEach(async () => {
    await roles.check();
  }, 60_000);

  afterAll(async () => {
    await writer?.stop();
    // Volumes go while their agents run (they take the engines down and unmount); then
    // the release goes back to the shortcut's shape (no pods) and the nodes to how they booted.
    await kubectl(['delete', 'rv', '--all', '-n', ns, '--timeout=90s']).catch(() => undefined);
    await kubectl(['delete', 'namespace', ns, '--wait=false']).catch(() => undefined);
    await deploy('deploy').catch(() => undefined);
    await deploy('undeploy').catch(() => undefined);
    await freshDisks([mount]).catch(() => undefined);
  }, 300_000);

  test('the engines run in the engine host pod, not in the agent container; resident memory', async () => {
    const hosts = await pods('engine-host');
    expect(hosts.map((p) => p.spec.nodeName).sort()).toEqual([...nodes].sort());
    const agents = await pods('node-agent');
    for (const node of nodes) {
      const es = await engines(node);
      expect(es).toHaveLength(1);
      // The engine's pid file names a process of the engine host's pid namespace, and the
      // agent's container does not see it at all.
      const hostPod = on(hosts, node)!.metadata.name;
      const agentPod = on(agents, node)!.metadata.name;
      const inPod = async (pod: string, script: string) =>
        (await kubectl(['exec', '-n', release.namespace, pod, '--', 'sh', '-c', script])).stdout.trim();
      const cmd = await inPod(hostPod, `tr '\\0' ' ' < /proc/$(cat /run/tandem/${ns}.db.pid)/cmdline`);
      expect(cmd).toContain('--__engine');
      expect(await inPod(agentPod, `grep -l -a -e '--__engin[e]' /proc/[0-9]*/cmdline 2>/dev/null | wc -l`)).toBe('0');
    }
    const [mEngine] = await engines('master');
    const [bEngine] = await engines('backup');
    const fuse = await procs('master', 'nbdfuse');
    const [mAgent] = await agentProcs('master');
    const hostProc = await procs('master', 'tandem-engine-host.js');
    console.log(
      [
        'resident memory (VmRSS), 1 volume being written to:',
        `  engine, Primary (master): ${mib(mEngine!.rssKiB)}, its nbdfuse: ${mib(fuse.reduce((a, p) => a + p.rssKiB, 0))}`,
        `  engine, Secondary (backup): ${mib(bEngine!.rssKiB)}`,
        `  engine host process (master): ${mib(hostProc.reduce((a, p) => a + p.rssKiB, 0))}`,
        `  node agent (master): ${mib(mAgent!.rssKiB)}`,
      ].join('\n'),
    );
  });

  /**
   * Runs `disrupt` (which returns once the new agents are Ready) with the writer going;
   * then checks that no write failed, writes went on while the agent was away, the
   * engines are the same processes, the new agent acted on none, and the volume's
   * roles did not move.
   */
  async function throughAgentRestart(
    what: string,
    restarted: readonly string[],
    disrupt: () => Promise<void>,
  ): Promise<void> {
    const rvBefore = await waitReady(ns, 'db', 'master');
    const enginesBefore = { master: identity(await engines('master')), backup: identity(await engines('backup')) };
    const hostsBefore = await pods('engine-host');
    const t0 = Date.now();
    await disrupt();
    const tReady = Date.now();
    const agents = await pods('node-agent');
    // The new agents adopted the engines: they report the replicas again (a report
    // written after the new agent's pod started: the old pod was gone by then). A new
    // agent reports at its first pass, and then only on a change or once a minute (its
    // liveness is its Lease), so in a rollout the first node's report can come well
    // before the last node's agent is Ready.
    for (const node of restarted) {
      const pod = agents.find((p) => p.spec.nodeName === node);
      const started = Math.min(
        ...(pod?.status.containerStatuses ?? []).map((c) => Date.parse(c.state?.running?.startedAt ?? '')),
      );
      expect(started).toBeGreaterThan(t0 - 1000);
      await eventually(async () => expect(await heartbeat(node)).toBeGreaterThanOrEqual(started), {
        timeoutMs: 30_000,
        intervalMs: 500,
        what: `a report on db-${node} from the new agent`,
      });
    }
    await writer.waitAcks(50);
    const during = writer.acks.filter((a) => a.t > t0 && a.t < tReady);
    const gaps = writer.acks.slice(1).map((a, i) => ({ gap: a.t - writer.acks[i]!.t, at: a.t }));
    const maxGap = Math.max(...gaps.filter((g) => g.at > t0).map((g) => g.gap));
    console.log(
      `${what}: new agent(s) Ready after ${((tReady - t0) / 1000).toFixed(1)} s; ${during.length} records acknowledged meanwhile; longest gap between two acknowledgements ${maxGap} ms; writer error: ${writer.error ?? 'none'}`,
    );
    expect(writer.error).toBeUndefined();
    expect(writer.exited).toBe(false);
    expect(during.length).toBeGreaterThan(0);
    // …and acted on none of them: the same engine processes, no engine action in the log.
    expect({ master: identity(await engines('master')), backup: identity(await engines('backup')) }).toEqual(
      enginesBefore,
    );
    for (const node of restarted) {
      const log = (await kubectl(['logs', '-n', release.namespace, on(agents, node)!.metadata.name])).stdout;
      expect(log).toContain('Agent started');
      for (const action of ['Started the engine', 'Promoted', 'Demoted', 'Took the engine down', 'Created metadata'])
        expect({ node, action, inLog: log.includes(action) }).toEqual({ node, action, inLog: false });
    }
    // The engine host pods are the same pods, never restarted.
    const hostsAfter = await pods('engine-host');
    expect(hostsAfter.map((p) => `${p.metadata.uid}/${restarts(p)}`).sort()).toEqual(
      hostsBefore.map((p) => `${p.metadata.uid}/${restarts(p)}`).sort(),
    );
    // No role change: the same Primary, epoch and last role change as before.
    const rvAfter: Rv = await waitReady(ns, 'db', 'master');
    expect({
      primary: rvAfter.status?.primary,
      epoch: rvAfter.status?.epoch,
      lastRoleChange: rvAfter.status?.lastRoleChange,
    }).toEqual({
      primary: rvBefore.status?.primary,
      epoch: rvBefore.status?.epoch,
      lastRoleChange: rvBefore.status?.lastRoleChange,
    });
  }

  test('kubectl rollout restart daemonset/tandem-node-agent: no write fails, the new agents adopt the engines', async () => {
    const old = await pods('node-agent');
    await throughAgentRestart('rollout restart', nodes, async () => {
      await kubectl(['rollout', 'restart', `daemonset/${agentDs}`, '-n', release.namespace]);
      await kubectl(['rollout', 'status', `daemonset/${agentDs}`, '-n', release.namespace, '--timeout=4m']);
      await eventually(
        async () => {
          const now = await pods('node-agent');
          expect(now.map((p) => on(old, p.spec.nodeName!)?.metadata.uid === p.metadata.uid)).toEqual([false, false]);
          expect(now.every(ready)).toBe(true);
        },
        { timeoutMs: 60_000, what: 'new Ready agent pods on both nodes' },
      );
    });
  });

  test('helm upgrade to another image: the agents roll, the engine host stays (OnDelete), no write fails', async () => {
    // The same content under another name: a changed image for the kubelet and for helm.
    const upgraded = `${image.tag}-upgrade`;
    for (const node of nodes)
      await execInNode(node, [
        'sh',
        '-c',
        `ctr --address /run/containerd/containerd.sock -n k8s.io images tag ${image.repository}:${image.tag} ${image.repository}:${upgraded} 2>&1 | grep -v 'already exists' ; true`,
      ]);
    const old = await pods('node-agent');
    await throughAgentRestart('helm upgrade (image)', nodes, async () => {
      await install(upgraded);
      await kubectl(['rollout', 'status', `daemonset/${agentDs}`, '-n', release.namespace, '--timeout=4m']);
      await eventually(
        async () => {
          const now = await pods('node-agent');
          expect(now.map((p) => on(old, p.spec.nodeName!)?.metadata.uid === p.metadata.uid)).toEqual([false, false]);
          expect(now.map((p) => ({ ready: ready(p), image: p.spec.containers[0]?.image }))).toEqual(
            now.map(() => ({ ready: true, image: `${image.repository}:${upgraded}` })),
          );
        },
        { timeoutMs: 60_000, what: `Ready agent pods running ${upgraded} on both nodes` },
      );
    });
    // The engine host's template names the new image; its pods are still the old ones, made
    // from the old template (the two names are one image to containerd, so the pods' specs tell).
    const template = await kubectl([
      'get',
      'daemonset',
      `${release.name}-engine-host`,
      '-n',
      release.namespace,
      '-o',
      'jsonpath={.spec.template.spec.containers[0].image}',
    ]);
    expect(template.stdout).toBe(`${image.repository}:${upgraded}`);
    for (const p of await pods('engine-host'))
      expect(p.spec.containers[0]?.image).toBe(`${image.repository}:${image.tag}`);
  });

  test("kill -9 of the agent's main process: the kubelet restarts it, no write fails, it adopts the engines", async () => {
    const before = on(await pods('node-agent'), 'master')!;
    await throughAgentRestart('kill -9 of the agent', ['master'], async () => {
      const agent = (await agentProcs('master')).filter((p) => p.cmd.startsWith('node '));
      expect(agent).toHaveLength(1);
      await execInNode('master', ['kill', '-9', String(agent[0]!.pid)]);
      await eventually(
        async () => {
          const now = on(await pods('node-agent'), 'master')!;
          expect({ uid: now.metadata.uid, restarts: restarts(now), ready: ready(now) }).toEqual({
            uid: before.metadata.uid,
            restarts: restarts(before) + 1,
            ready: true,
          });
        },
        { timeoutMs: 120_000, intervalMs: 500, what: 'the agent container restarted by the kubelet and Ready' },
      );
    });
  });

  test('every acknowledged record is on the volume', async () => {
    await writer.stop();
    expect(writer.error).toBeUndefined();
    const acks: Ack[] = writer.acks;
    const present = await recordsOn('master', mount);
    const missing = acks.filter((a) => !present.has(a.i)).map((a) => a.i);
    console.log(`${acks.length} records acknowledged through the three agent restarts; ${missing.length} missing`);
    expect({ acknowledged: acks.length, missing: missing.slice(0, 20) }).toEqual({
      acknowledged: acks.length,
      missing: [],
    });
  });
});
