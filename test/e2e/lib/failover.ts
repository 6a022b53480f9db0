// Tools for the failover suites: an application that writes numbered records on
// the Primary's filesystem and reports every acknowledged one, the records a node
// can read back, and the faults (node stop/partition, replication link cut, API
// partitions of agents and controller).
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { state } from '../harness/paths.ts';
import { agentBack, controllerBack, inPodNetwork, leaseHolder, onPods, pods } from './chart.ts';
import { harness, kubectl } from './cluster.ts';
import { eventually } from './eventually.ts';
import { execInNode, spawnInNode } from './nodes.ts';

export type Ack = { i: number; t: number; node: string };

let writers = 0;

/**
 * `record N` in the 4 KiB block N - BASE of MOUNT/log-BASE, each written with O_DSYNC (on a
 * protocol C volume: on both disks before dd returns); `ack N <ms>` is printed only
 * after dd succeeded. The first error ends it (a superseded Primary's writes fail).
 */
export class RecordWriter {
  readonly node: string;
  readonly base: number;
  readonly acks: Ack[] = [];
  error: string | undefined;
  readonly #child: ChildProcess;
  readonly #stopFile: string;
  #exited = false;

  constructor(node: string, mount: string, base: number, limit = 1_000_000) {
    this.node = node;
    this.base = base;
    this.#stopFile = `/tmp/tandem-e2e-writer-stop-${process.pid}-${++writers}`;
    rmSync(this.#stopFile, { force: true });
    const script = [
      `i=${base}`,
      `while [ $i -lt ${base + limit} ] && [ ! -e ${this.#stopFile} ]; do`,
      `  printf 'record %d\\n' $i | dd of=${mount}/log-${base} bs=4096 count=1 seek=$((i-${base})) conv=notrunc,sync oflag=dsync status=none 2>/tmp/dd-err-$$ || { echo "err $i $(date +%s%3N) $(head -c 200 /tmp/dd-err-$$)"; exit 1; }`,
      '  echo "ack $i $(date +%s%3N)"',
      '  i=$((i+1))',
      'done',
    ].join('\n');
    this.#child = spawnInNode(node, ['sh', '-c', script]);
    let buf = '';
    this.#child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        const [kind, i, t, ...rest] = l.split(' ');
        if (kind === 'ack') this.acks.push({ i: Number(i), t: Number(t), node });
        else if (kind === 'err') this.error = `record ${i} at ${t}: ${rest.join(' ')}`;
      }
    });
    this.#child.on('exit', () => {
      this.#exited = true;
    });
  }

  get exited(): boolean {
    return this.#exited;
  }

  get lastAckAt(): number | undefined {
    return this.acks.at(-1)?.t;
  }

  async waitAcks(n: number, timeoutMs = 60_000): Promise<void> {
    const want = this.acks.length + n;
    await eventually(
      () => {
        if (this.acks.length < want && this.#exited)
          throw new Error(`the writer on ${this.node} ended early: ${this.error ?? 'no error line'}`);
        expect(this.acks.length).toBeGreaterThanOrEqual(want);
      },
      { timeoutMs, intervalMs: 100, what: `${n} acknowledged records on ${this.node}` },
    );
  }

  /** Asks the loop to end and waits (a frozen dd may keep it until its I/O fails). */
  async stop(timeoutMs = 10_000): Promise<void> {
    writeFileSync(this.#stopFile, '');
    const deadline = Date.now() + timeoutMs;
    while (!this.#exited && Date.now() < deadline) await sleep(50);
    if (!this.#exited) this.#child.kill('SIGKILL');
    rmSync(this.#stopFile, { force: true });
  }
}

/** The record numbers in MOUNT/log-* as `node` reads them. */
export async function recordsOn(node: string, mount: string): Promise<Set<number>> {
  const out = (
    await execInNode(node, ['sh', '-c', `cat ${mount}/log-* | tr -s '\\000' '\\n' | grep -a '^record ' || true`])
  ).stdout;
  return new Set(
    out
      .split('\n')
      .filter((l) => l.startsWith('record '))
      .map((l) => Number(l.slice(7))),
  );
}

/** Polls a write on the node until it succeeds; resolves with the time (ms) of the first success. */
export async function firstWriteOn(node: string, mount: string, timeoutMs = 60_000): Promise<number> {
  const script = `end=$(( $(date +%s) + ${Math.ceil(timeoutMs / 1000)} )); while [ $(date +%s) -lt $end ]; do printf probe | dd of=${mount}/probe bs=4096 count=1 conv=notrunc,sync oflag=dsync status=none 2>/dev/null && { date +%s%3N; exit 0; }; sleep 0.1; done; exit 1`;
  const out = (await execInNode(node, ['sh', '-c', script])).stdout.trim();
  return Number(out);
}

export const nodeAction = (action: 'stop' | 'start' | 'partition' | 'heal', node: string) =>
  harness('node', action, node);

/** Drops the replication traffic of `port` inside the node (both directions); the API stays reachable. */
export async function cutLink(node: string, port: number): Promise<void> {
  for (const chain of ['INPUT', 'OUTPUT'])
    for (const dir of ['--dport', '--sport'])
      await execInNode(node, ['iptables', '-I', chain, '-p', 'tcp', dir, String(port), '-j', 'DROP']);
}

export async function healLink(node: string, port: number): Promise<void> {
  for (const chain of ['INPUT', 'OUTPUT'])
    for (const dir of ['--dport', '--sport'])
      await execInNode(node, [
        'sh',
        '-c',
        `while iptables -D ${chain} -p tcp ${dir} ${port} -j DROP 2>/dev/null; do :; done`,
      ]);
}

const API = { ip: '10.77.0.1', port: '6443' };

/** The node (its agent and its heartbeat, as a kubelet) cannot reach the API server; the peer still can be reached. */
export async function cutApi(node: string): Promise<void> {
  await execInNode(node, ['iptables', '-I', 'OUTPUT', '-p', 'tcp', '-d', API.ip, '--dport', API.port, '-j', 'DROP']);
}

export async function healApi(node: string): Promise<void> {
  await execInNode(node, [
    'sh',
    '-c',
    `while iptables -D OUTPUT -p tcp -d ${API.ip} --dport ${API.port} -j DROP 2>/dev/null; do :; done`,
  ]);
}

// The host-process controller runs on this machine, as does kubectl: its own cgroup (v2)
// tells its packets apart for iptables' cgroup match. A controller pod has its own
// network namespace, where it reaches the API server through the kubernetes Service (443).
const CONTROLLER_CGROUP = 'tandem-e2e-controller';
const cgroupRoot =
  ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].find((p) => existsSync(`${p}/cgroup.procs`)) ?? '/sys/fs/cgroup';
const podApiRule = (op: '-I' | '-D', port: string) => `iptables ${op} OUTPUT -p tcp --dport ${port} -j DROP`;

function controllerPid(): number {
  return Number(readFileSync(join(state.run, '..', 'deploy', 'controller.pid'), 'utf8').trim());
}

async function nodeStopped(node: string): Promise<boolean> {
  const out = await harness('status');
  return (JSON.parse(out.stdout) as { nodes: Record<string, { stopped?: boolean }> }).nodes[node]?.stopped === true;
}

/** The controller that led when the API was cut, and its restarts then (pods). */
let cutLeader: { name: string; restarts: number } | undefined;

/** Every packet from the controller (each replica, as pods) to the API server is dropped. */
export async function cutControllerApi(): Promise<void> {
  if (onPods) {
    const holder = await leaseHolder();
    for (const pod of await pods('controller')) {
      if (pod.metadata.name === holder)
        cutLeader = { name: holder, restarts: pod.status.containerStatuses?.[0]?.restartCount ?? 0 };
      await inPodNetwork(pod, `${podApiRule('-I', '443')} && ${podApiRule('-I', API.port)}`);
    }
    return;
  }
  mkdirSync(`${cgroupRoot}/${CONTROLLER_CGROUP}`, { recursive: true });
  writeFileSync(`${cgroupRoot}/${CONTROLLER_CGROUP}/cgroup.procs`, `${controllerPid()}\n`);
  await execHost('iptables', [
    '-I',
    'OUTPUT',
    '-p',
    'tcp',
    '-d',
    API.ip,
    '--dport',
    API.port,
    '-m',
    'cgroup',
    '--path',
    CONTROLLER_CGROUP,
    '-j',
    'DROP',
  ]);
}

export async function healControllerApi(): Promise<void> {
  if (onPods) {
    // A pod on a stopped node has no process to enter; its node's restart gives it a new network.
    for (const pod of await pods('controller'))
      await inPodNetwork(
        pod,
        `while ${podApiRule('-D', '443')} 2>/dev/null; do :; done; while ${podApiRule('-D', API.port)} 2>/dev/null; do :; done`,
      ).catch(async (err: unknown) => {
        if (!(await nodeStopped(pod.spec.nodeName!))) throw err;
      });
    return;
  }
  await execHost('sh', [
    '-c',
    `while iptables -D OUTPUT -p tcp -d ${API.ip} --dport ${API.port} -m cgroup --path ${CONTROLLER_CGROUP} -j DROP 2>/dev/null; do :; done`,
  ]);
  // The cut-off controller has exited (it lost its Lease); its empty cgroup goes too.
  await execHost('sh', ['-c', `rmdir ${cgroupRoot}/${CONTROLLER_CGROUP} 2>/dev/null; true`]);
}

async function execHost(cmd: string, args: string[]): Promise<void> {
  const { execFile } = await import('node:child_process');
  await new Promise<void>((resolve, reject) =>
    execFile(cmd, args, (err, _o, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr}`)) : resolve(),
    ),
  );
}

/**
 * The controller that led has given up (it exits when it cannot renew its Lease): the
 * process is gone, or, as a pod, its container was restarted since the cut.
 */
export async function controllerGaveUp(): Promise<boolean> {
  if (onPods) {
    const pod = (await pods('controller')).find((p) => p.metadata.name === cutLeader?.name);
    return pod !== undefined && (pod.status.containerStatuses?.[0]?.restartCount ?? 0) > cutLeader!.restarts;
  }
  return !controllerAlive();
}

/** The host-process controller is alive (it exits when it loses its Lease). */
function controllerAlive(): boolean {
  try {
    return readFileSync(`/proc/${controllerPid()}/cmdline`, 'utf8').includes('tandem-controller');
  } catch {
    return false;
  }
}

/** Puts every fault away: nodes started and healed, links and API reachable, agents and controller running. */
export async function healEverything(nodes: readonly string[], port: number | undefined): Promise<void> {
  await healControllerApi().catch(() => undefined);
  for (const n of nodes) {
    await nodeAction('start', n).catch(() => undefined);
    await nodeAction('heal', n).catch(() => undefined);
    await healApi(n).catch(() => undefined);
    if (port !== undefined) await healLink(n, port).catch(() => undefined);
  }
  if (!onPods && !controllerAlive()) await controllerBack();
  for (const n of nodes) await agentBack(n).catch(() => undefined);
}

/** The node's Ready condition changed at (ms), from the Node object. */
export async function nodeReadyTransition(node: string): Promise<{ status: string; at: number }> {
  const n = JSON.parse((await kubectl(['get', 'node', node, '-o', 'json'])).stdout) as {
    status: { conditions: { type: string; status: string; lastTransitionTime: string }[] };
  };
  const c = n.status.conditions.find((x) => x.type === 'Ready')!;
  return { status: c.status, at: Date.parse(c.lastTransitionTime) };
}
