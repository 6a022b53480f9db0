// Simulated nodes. A node is
//   - a network namespace (tandem-e2e-NAME) whose eth0 is a veth on the bridge
//     tandem-br0, with the node's IP; no default route, so it reaches the other
//     nodes and the API server (the bridge's host address) and nothing else;
//   - a persistent mount namespace and UTS namespace (nsfs handles under
//     /run/tandem-e2e/NAME, as `ip netns` keeps network namespaces), where
//       /dev        is an overlay on the shared devtmpfs (every device stays
//                   visible, new loop devices included) whose private upper layer
//                   holds /dev/sdb1 and /dev/sdb2: block device nodes of loop
//                   devices on sparse files in .cluster/nodes/NAME;
//       /run/tandem is a private tmpfs (fresh after every start, as after a boot);
//       /etc/tandem is the node's own directory .cluster/nodes/NAME/etc-tandem;
//     and the hostname is NAME;
//   - a Node object and the heartbeat (heartbeat.ts) running inside the namespaces.
// stop kills every process in the network namespace; partition downs the host
// side of the veth. Nothing is created in the shared /dev.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureClient } from './certs.ts';
import type { KubeHttp } from './kube-http.ts';
import { net, nodeDisks, nodeNs, nsRoot, state, stateDir, timing } from './paths.ts';
import { daemonPid, isAlive, run, startDaemon, stopDaemon, waitFor } from './proc.ts';

export type NodeState = { index: number; stopped: boolean; partitioned: boolean };
export type ClusterState = { nodes: Record<string, NodeState> };

export function readState(): ClusterState {
  try {
    return JSON.parse(readFileSync(state.file, 'utf8')) as ClusterState;
  } catch {
    return { nodes: {} };
  }
}

export function writeState(s: ClusterState): void {
  mkdirSync(stateDir, { recursive: true });
  writeFileSync(state.file, `${JSON.stringify(s, null, 2)}\n`);
}

function isMountpoint(path: string): boolean {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  return mounts.split('\n').some((l) => l.split(' ')[4] === path);
}

function netnsExists(name: string): boolean {
  return existsSync(nodeNs.netnsPath(name));
}

/** The netns handle is a live namespace (a mount), not a file left from before a reboot. */
function netnsLive(name: string): boolean {
  return isMountpoint(nodeNs.netnsPath(name));
}

function linkExists(name: string, netns?: string): boolean {
  return run('ip', [...(netns ? ['-n', netns] : []), 'link', 'show', name], { allowFail: true }).status === 0;
}

/** nsenter arguments that put a command inside all of a node's namespaces. */
export function nsenterArgs(name: string, cwd = '/'): string[] {
  return [
    `--net=${nodeNs.netnsPath(name)}`,
    `--mount=${nodeNs.mnt(name)}`,
    `--uts=${nodeNs.uts(name)}`,
    `--wd=${cwd}`,
    '--',
  ];
}

function inNode(name: string, script: string): void {
  run('nsenter', [...nsenterArgs(name), 'sh', '-euc', script]);
}

export function ensureBridge(): void {
  if (!linkExists(net.bridge)) {
    run('ip', ['link', 'add', net.bridge, 'type', 'bridge']);
    run('ip', ['addr', 'add', `${net.hostIp}/${net.prefixLength}`, 'dev', net.bridge]);
  }
  run('ip', ['link', 'set', net.bridge, 'up']);
}

/** /run/tandem-e2e is a private bind mount, so nsfs handles under it don't propagate. */
function ensureNsRoot(): void {
  mkdirSync(nsRoot, { recursive: true });
  if (!isMountpoint(nsRoot)) {
    run('mount', ['--bind', nsRoot, nsRoot]);
    run('mount', ['--make-private', nsRoot]);
  }
  if (!existsSync(ownerFile)) writeFileSync(ownerFile, stateDir);
}

// Names, IPs and the bridge are per machine, so one cluster at a time: the state
// dir that made the nodes is recorded, and another one's leftovers can be found.
const ownerFile = join(nsRoot, 'owner');

/** The state dir whose nodes exist on this machine, if any. */
export function nodesOwner(): string | undefined {
  try {
    return readFileSync(ownerFile, 'utf8');
  } catch {
    return undefined;
  }
}

function ensureNetwork(name: string, index: number): void {
  const ns = nodeNs.netns(name);
  const veth = nodeNs.hostVeth(name);
  if (netnsExists(name) && !netnsLive(name)) rmSync(nodeNs.netnsPath(name));
  if (!netnsExists(name)) run('ip', ['netns', 'add', ns]);
  if (!linkExists(veth)) {
    run('ip', ['-n', ns, 'link', 'del', 'eth0'], { allowFail: true });
    run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    run('ip', ['-n', ns, 'addr', 'add', `${net.nodeIp(index)}/${net.prefixLength}`, 'dev', 'eth0']);
  }
  run('ip', ['link', 'set', veth, 'master', net.bridge]);
  run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
}

function ensureDisks(name: string): Map<string, string> {
  const dir = state.node(name);
  mkdirSync(dir, { recursive: true });
  const loops = new Map<string, string>();
  for (const d of nodeDisks) {
    const file = join(dir, `${d.dev}.img`);
    if (!existsSync(file)) run('truncate', ['-s', String(d.bytes), file]);
    let loop = run('losetup', ['-j', file, '-O', 'NAME', '-n']).stdout.trim().split('\n')[0];
    if (!loop) loop = run('losetup', ['-f', '--show', file]).stdout.trim();
    loops.set(d.dev, loop);
  }
  // Recorded outside the state dir, so a teardown finds them even if that dir is gone.
  mkdirSync(nodeNs.dir(name), { recursive: true });
  writeFileSync(
    loopsFile(name),
    [...loops.values()].map((loop, i) => `${loop} ${join(dir, `${nodeDisks[i]!.dev}.img`)}\n`).join(''),
  );
  return loops;
}

const loopsFile = (name: string) => join(nodeNs.dir(name), 'loops');

/** Detaches the node's loop devices, checking each still has the backing file it was made for. */
function detachDisks(name: string): void {
  if (!existsSync(loopsFile(name))) return;
  for (const line of readFileSync(loopsFile(name), 'utf8').split('\n').filter(Boolean)) {
    const [loop, file] = line.split(' ');
    const back = run('losetup', ['-n', '-O', 'BACK-FILE', loop!], { allowFail: true })
      .stdout.trim()
      .replace(/ \(deleted\)$/, '');
    if (back === file) run('losetup', ['-d', loop!], { allowFail: true });
  }
}

function ensureMountNamespace(name: string, loops: Map<string, string>): void {
  const dir = nodeNs.dir(name);
  if (isMountpoint(nodeNs.mnt(name))) return;
  mkdirSync(dir, { recursive: true });
  for (const handle of [nodeNs.mnt(name), nodeNs.uts(name)]) {
    if (isMountpoint(handle)) run('umount', [handle]); // a UTS handle that outlived its mount namespace
    writeFileSync(handle, '');
  }
  // Mount points must exist in the shared file system before the copy is made.
  mkdirSync('/run/tandem', { recursive: true });
  mkdirSync('/etc/tandem', { recursive: true });
  const etc = join(state.node(name), 'etc-tandem');
  mkdirSync(etc, { recursive: true });
  run('unshare', [`--mount=${nodeNs.mnt(name)}`, `--uts=${nodeNs.uts(name)}`, '--propagation', 'private', 'true']);
  const devs = [...loops].map(([dev, loop]) => {
    const [major, minor] = readFileSync(`/sys/class/block/${loop.replace('/dev/', '')}/dev`, 'utf8')
      .trim()
      .split(':');
    return `mknod -m 0660 /dev/${dev} b ${major} ${minor}`;
  });
  const overlay = join(dir, 'dev');
  inNode(
    name,
    [
      `hostname ${name}`,
      // Other nodes' namespace handles and /run/netns are no business of this node.
      `umount -R -l ${nsRoot} 2>/dev/null || true`,
      'umount -R -l /run/netns 2>/dev/null || true',
      // Fresh layers: ones left by an earlier namespace (a reboot keeps /run here) hold stale nodes.
      `rm -rf ${overlay}.upper ${overlay}.work`,
      `mkdir -p ${overlay}.upper ${overlay}.work ${overlay}.merged`,
      `mount -t overlay tandem-dev -o lowerdir=/dev,upperdir=${overlay}.upper,workdir=${overlay}.work ${overlay}.merged`,
      `for m in pts shm mqueue hugepages; do if mountpoint -q /dev/$m; then mount --rbind /dev/$m ${overlay}.merged/$m; fi; done`,
      `mount --move ${overlay}.merged /dev`,
      ...devs,
      'mount -t tmpfs -o size=64m,mode=0755 tandem-run /run/tandem',
      `mount --bind ${etc} /etc/tandem`,
    ].join('\n'),
  );
}

/** A fresh /run/tandem, as after a boot. */
function resetRunDir(name: string): void {
  inNode(name, 'umount /run/tandem 2>/dev/null || true\nmount -t tmpfs -o size=64m,mode=0755 tandem-run /run/tandem');
}

async function ensureNodeObject(http: KubeHttp, name: string): Promise<void> {
  const g = await http.request('GET', `/api/v1/nodes/${name}`);
  if (g.status === 200) return;
  const labels = {
    'kubernetes.io/hostname': name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': process.arch === 'x64' ? 'amd64' : process.arch,
    'tandem.dev/e2e-node': 'true',
  };
  const c = await http.request('POST', '/api/v1/nodes', {
    body: { apiVersion: 'v1', kind: 'Node', metadata: { name, labels } },
  });
  if (c.status >= 300 && c.status !== 409) throw new Error(`Creating Node ${name} answered ${c.status}: ${c.text}`);
}

function startHeartbeat(name: string, index: number): void {
  if (daemonPid(`heartbeat-${name}`) !== undefined) return;
  const kubeconfig = join(state.node(name), 'kubeconfig');
  ensureClient({ name: `node-${name}`, cn: `system:node:${name}`, groups: ['system:nodes'] }, kubeconfig);
  const script = join(import.meta.dirname, 'heartbeat.ts');
  startDaemon(`heartbeat-${name}`, 'nsenter', [
    ...nsenterArgs(name),
    process.execPath,
    script,
    name,
    net.nodeIp(index),
    kubeconfig,
    String(timing.heartbeatSeconds),
  ]);
}

type NodeView = { status?: { conditions?: { type: string; status: string }[] }; spec?: { taints?: { key: string }[] } };

export async function nodeReady(http: KubeHttp, name: string): Promise<boolean> {
  const r = await http.request('GET', `/api/v1/nodes/${name}`).catch(() => undefined);
  if (r?.status !== 200) return false;
  const n = r.body as NodeView;
  const ready = n.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
  const tainted = (n.spec?.taints ?? []).some(
    (t) => t.key === 'node.kubernetes.io/unreachable' || t.key === 'node.kubernetes.io/not-ready',
  );
  return ready && !tainted;
}

/** Brings one node to "running, connected, Ready": a no-op when it already is. */
export async function ensureNode(http: KubeHttp, name: string, index: number): Promise<void> {
  const s = readState();
  ensureNsRoot();
  ensureNetwork(name, index);
  const loops = ensureDisks(name);
  ensureMountNamespace(name, loops);
  await ensureNodeObject(http, name);
  const wasStopped = s.nodes[name]?.stopped ?? false;
  if (wasStopped) resetRunDir(name);
  run('ip', ['link', 'set', nodeNs.hostVeth(name), 'up']);
  startHeartbeat(name, index);
  s.nodes[name] = { index, stopped: false, partitioned: false };
  writeState(s);
}

export async function waitNodesReady(http: KubeHttp, names: readonly string[], timeoutMs = 60_000): Promise<void> {
  for (const name of names) {
    await waitFor(`node ${name} Ready without unreachable/not-ready taints`, () => nodeReady(http, name), timeoutMs);
  }
}

function netnsPids(name: string): number[] {
  if (!netnsExists(name)) return [];
  const out = run('ip', ['netns', 'pids', nodeNs.netns(name)], { allowFail: true }).stdout;
  return out.split('\n').filter(Boolean).map(Number);
}

/** SIGKILL to everything in the node, heartbeat included, until nothing is left. */
export async function killNodeProcesses(name: string): Promise<void> {
  await stopDaemon(`heartbeat-${name}`, 0);
  for (let round = 0; round < 50; round++) {
    const pids = netnsPids(name).filter((p) => p !== process.pid);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    while (pids.some(isAlive)) await sleep(20);
  }
  throw new Error(`Processes keep appearing in node ${name}'s namespace`);
}

function nodeEntry(name: string): NodeState {
  const n = readState().nodes[name];
  if (!n)
    throw new Error(`No node ${name} in ${state.file}; known: ${Object.keys(readState().nodes).join(', ') || 'none'}`);
  return n;
}

function updateNode(name: string, change: Partial<NodeState>): void {
  const s = readState();
  s.nodes[name] = { ...nodeEntry(name), ...change };
  writeState(s);
}

/** The loop devices a node's engines attached (nbdfuse + losetup), asked while nbdfuse still answers. */
function nodeLoopDevices(name: string): string[] {
  const out = run(
    'nsenter',
    [
      ...nsenterArgs(name),
      'sh',
      '-c',
      'for f in /run/tandem/*.fuse/disk; do [ -e "$f" ] && losetup -j "$f" -n -O NAME; done; true',
    ],
    { allowFail: true },
  ).stdout;
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^\/dev\/loop\d+$/.test(l));
}

/**
 * A crashed machine: every process in it dies, its heartbeat stops. Disks stay.
 * Its kernel state goes too: the simulated nodes share this machine's kernel, so
 * the filesystems its Primary had mounted (and their loop devices) are detached
 * here — otherwise XFS would refuse to mount the other node's copy ("duplicate
 * UUID"), which no real pair of machines ever sees.
 */
export async function stopNode(name: string): Promise<void> {
  nodeEntry(name);
  const loops = nodeLoopDevices(name);
  await killNodeProcesses(name);
  const script = [
    ...loops.map(
      (d) => `for m in $(findmnt -rn -o TARGET -S ${d}); do umount -l "$m"; done; losetup -d ${d} 2>/dev/null`,
    ),
    'for d in /run/tandem/*.fuse; do mountpoint -q "$d" && umount -l "$d"; done',
    'true',
  ].join('\n');
  run('nsenter', [...nsenterArgs(name), 'sh', '-c', script], { allowFail: true });
  updateNode(name, { stopped: true });
}

/** The machine boots again: a fresh /run/tandem, the heartbeat restarts. */
export async function startNode(http: KubeHttp, name: string): Promise<void> {
  const n = nodeEntry(name);
  await ensureNode(http, name, n.index);
}

/** Cuts the node's link: its processes keep running, nothing reaches it and it reaches nothing. */
export function partitionNode(name: string): void {
  nodeEntry(name);
  run('ip', ['link', 'set', nodeNs.hostVeth(name), 'down']);
  updateNode(name, { partitioned: true });
}

export function healNode(name: string): void {
  nodeEntry(name);
  run('ip', ['link', 'set', nodeNs.hostVeth(name), 'up']);
  updateNode(name, { partitioned: false });
}

export function assertRunnable(name: string): void {
  if (nodeEntry(name).stopped)
    throw new Error(`Node ${name} is stopped; start it with: npm run cluster:node -- start ${name}`);
}

/** Tears down every simulated node this harness made, whatever state.json says. */
export async function destroyNodes(): Promise<void> {
  const names = new Set<string>(Object.keys(readState().nodes));
  for (const ns of run('ip', ['netns', 'list'], { allowFail: true }).stdout.split('\n')) {
    const m = /^tandem-e2e-(\S+)/.exec(ns);
    if (m) names.add(m[1]!);
  }
  if (existsSync(nsRoot)) for (const d of readdirSync(nsRoot)) names.add(d);
  for (const name of names) {
    await killNodeProcesses(name);
    // Dropping the handles frees the mount namespace, and with it the /dev overlay and /run/tandem.
    for (const h of [nodeNs.mnt(name), nodeNs.uts(name)]) if (isMountpoint(h)) run('umount', [h]);
    if (netnsExists(name)) run('ip', ['netns', 'del', nodeNs.netns(name)]);
    if (linkExists(nodeNs.hostVeth(name))) run('ip', ['link', 'del', nodeNs.hostVeth(name)], { allowFail: true });
    detachDisks(name);
  }
  if (linkExists(net.bridge)) run('ip', ['link', 'del', net.bridge]);
  if (isMountpoint(nsRoot)) run('umount', [nsRoot]);
  rmSync(nsRoot, { recursive: true, force: true });
}
