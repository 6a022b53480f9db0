// Simulated nodes. A node is
//   - a network namespace (tandem-e2e-NAME) whose eth0 is a veth on the bridge
//     tandem-br0, with the node's IP; no default route, so it reaches the other
//     nodes (and their pods) and the API server (the bridge's host address) and
//     nothing else;
//   - a mount namespace and UTS namespace (nsfs handles under /run/tandem-e2e/NAME,
//     as `ip netns` keeps network namespaces), made anew at every start (a boot),
//     where
//       /dev        is an overlay on the shared devtmpfs (every device stays
//                   visible, new loop devices included) whose private upper layer
//                   holds /dev/sdb1 and /dev/sdb2: block device nodes of loop
//                   devices on sparse files in .cluster/nodes/NAME;
//       /run/tandem is a private tmpfs;
//       /etc/tandem is the node's own directory .cluster/nodes/NAME/etc-tandem;
//       the kubelet's and containerd's directories are the node's own
//                   (node-runtime.ts), and every mount is shared within the node,
//                   as on a machine booted by systemd (mount propagation for pods);
//     and the hostname is NAME;
//   - containerd, kube-proxy and a kubelet running in those namespaces and in the
//     node's cgroup (node-runtime.ts): the kubelet registers the Node and keeps it Ready.
// stop kills everything in the node's cgroup and network namespace at once (a power
// cut) and drops its mount namespace; partition downs the host side of the veth.
// Nothing is created in the shared /dev.
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Image } from '../../../scripts/image/oci.ts';
import { importIntoNode } from './images.ts';
import type { KubeHttp } from './kube-http.ts';
import {
  ensurePodRoutes,
  ensureRuntimeDirs,
  forgetRuntime,
  killNodeCgroup,
  removeNodeCgroups,
  type RuntimeStart,
  runtimeMountScript,
  startRuntime,
} from './node-runtime.ts';
import { net, nodeDisks, nodeNs, nsRoot, state, stateDir } from './paths.ts';
import { isAlive, run, waitFor } from './proc.ts';

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
  ensureRuntimeDirs(name);
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
      ...runtimeMountScript(name),
      // Shared within the node (not with the host: the namespace was copied private),
      // so a pod's Bidirectional mounts reach the node and other pods.
      'mount --make-rshared /',
    ].join('\n'),
  );
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

/** The images every node's containerd holds: the pod sandbox and tandem's own. */
export type NodeImages = { pause: Image; tandem: Image };

/** Brings one node to "running, connected, kubelet started": a no-op when it already is. */
export async function ensureNode(name: string, index: number, images: NodeImages): Promise<RuntimeStart> {
  const s = readState();
  ensureNsRoot();
  ensureNetwork(name, index);
  ensurePodRoutes(name, index);
  const loops = ensureDisks(name);
  ensureMountNamespace(name, loops);
  run('ip', ['link', 'set', nodeNs.hostVeth(name), 'up']);
  const started = await startRuntime(name, index, {
    pauseImage: images.pause.ref,
    loadImages: () => importIntoNode(name, [images.pause, images.tandem]),
  });
  s.nodes[name] = { index, stopped: false, partitioned: false };
  writeState(s);
  return started;
}

export async function waitNodesReady(http: KubeHttp, names: readonly string[], timeoutMs = 120_000): Promise<void> {
  for (const name of names) {
    await waitFor(`node ${name} Ready without unreachable/not-ready taints`, () => nodeReady(http, name), timeoutMs);
  }
}

function netnsPids(name: string): number[] {
  if (!netnsExists(name)) return [];
  const out = run('ip', ['netns', 'pids', nodeNs.netns(name)], { allowFail: true }).stdout;
  return out.split('\n').filter(Boolean).map(Number);
}

/**
 * SIGKILL to everything in the node, until nothing is left: its cgroup (kubelet,
 * containerd, every pod) at once, then whatever else runs in its network namespace
 * (processes started with cluster:exec, the host-process deploy's agents).
 */
export async function killNodeProcesses(name: string): Promise<void> {
  await killNodeCgroup(name);
  await forgetRuntime(name);
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
 * A crashed machine: every process in it dies at once (kubelet, containerd, pods,
 * engines), and so does its mount namespace (every mount). Disks stay.
 * Its kernel state goes too: the simulated nodes share this machine's kernel, so
 * the filesystems its Primary had mounted (and their loop devices) are detached
 * here — otherwise XFS would refuse to mount the other node's copy ("duplicate
 * UUID"), which no real pair of machines ever sees.
 */
/**
 * Keeps the engines' logs (<run-dir>/<resource>.log in the node's /run, which goes with
 * its mount namespace) in .cluster/logs/engines-NODE.log, so a failed test can be read after.
 */
export function saveEngineLogs(name: string): void {
  if (!isMountpoint(nodeNs.mnt(name))) return;
  const script = 'for f in /run/tandem/*.log; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done; true';
  const r = run('nsenter', [...nsenterArgs(name), 'sh', '-c', script], { allowFail: true });
  if (r.stdout) {
    mkdirSync(state.logs, { recursive: true });
    appendFileSync(join(state.logs, `engines-${name}.log`), `#### ${new Date().toISOString()}\n${r.stdout}`);
  }
}

export async function stopNode(name: string): Promise<void> {
  nodeEntry(name);
  saveEngineLogs(name);
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
  dropMountNamespace(name);
  updateNode(name, { stopped: true });
}

/** Releases the node's mount and UTS namespaces: with no process left in them, every mount goes. */
function dropMountNamespace(name: string): void {
  for (const h of [nodeNs.mnt(name), nodeNs.uts(name)]) if (isMountpoint(h)) run('umount', [h]);
}

/** The machine boots again: new mount namespace (fresh /run), containerd, kube-proxy, kubelet. */
export async function startNode(name: string, images: NodeImages): Promise<RuntimeStart> {
  const n = nodeEntry(name);
  return ensureNode(name, n.index, images);
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
    saveEngineLogs(name);
    await killNodeProcesses(name);
    // Dropping the handles frees the mount namespace, and with it the /dev overlay and /run/tandem.
    dropMountNamespace(name);
    removeNodeCgroups(name);
    if (netnsExists(name)) run('ip', ['netns', 'del', nodeNs.netns(name)]);
    if (linkExists(nodeNs.hostVeth(name))) run('ip', ['link', 'del', nodeNs.hostVeth(name)], { allowFail: true });
    detachDisks(name);
  }
  if (linkExists(net.bridge)) run('ip', ['link', 'del', net.bridge]);
  if (isMountpoint(nsRoot)) run('umount', [nsRoot]);
  rmSync(nsRoot, { recursive: true, force: true });
}
