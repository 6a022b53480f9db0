// What makes a simulated node a Kubernetes node: containerd (CRI, runc, the CNI
// bridge plugins), kube-proxy and a kubelet, all inside the node's network, mount
// and UTS namespaces, all in the node's own cgroup, each with the node's own
// state directories:
//
//   in the node             on the host (never shared between nodes)
//   /var/lib/kubelet        .cluster/nodes/NAME/root/var/lib/kubelet
//   /var/lib/containerd     …/var/lib/containerd     (images, snapshots)
//   /var/log/pods, /var/log/containers, /var/lib/cni, /etc/cni/net.d, /var/lib/tandem
//   /run/containerd, /run/netns                      tmpfs, fresh at every boot
//
//   cgroups (every v1 hierarchy): /tandem-e2e/NAME           the node
//                                 /tandem-e2e/NAME/system    containerd (and its shims), kubelet, kube-proxy
//                                 /tandem-e2e/NAME/kubepods  the kubelet's pods (its cgroupRoot is the node)
//
// Pods get 10.244.INDEX.0/24 on the node's cni0 bridge (masqueraded when they leave
// it); every node and the host route each other node's pod range to that node.
// Stopping a node is a power cut: the node's cgroup is frozen and everything in it
// killed at once — kubelet, containerd, shims, every container and every process a
// container started.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureClient, pkiFile } from './certs.ts';
import { bin, net, nodeNs, state, timing } from './paths.ts';
import { daemonPid, logTail, run, startDaemon, stopDaemon, waitFor } from './proc.ts';

export const podCidr = (index: number) => `10.244.${index}.0/24`;
export const clusterCidr = '10.244.0.0/16';
const maxNodes = 9;

/** Node-private directories, bound over the standard paths in the node's mount namespace. */
export const nodeDirs = [
  '/var/lib/kubelet',
  '/var/lib/containerd',
  '/var/log/pods',
  '/var/log/containers',
  '/var/lib/cni',
  '/etc/cni/net.d',
  '/var/lib/tandem',
] as const;
/** Fresh at every boot of the node. */
export const nodeTmpfs = ['/run/containerd', '/run/netns'] as const;

export const nodeRoot = (name: string) => join(state.node(name), 'root');
const configDir = (name: string) => join(state.node(name), 'config');

// --- cgroups -------------------------------------------------------------------

const cgroupFs = '/sys/fs/cgroup';
export const nodeCgroup = (name: string) => `/tandem-e2e/${name}`;

/** Mounted cgroup v1 hierarchies (cpu, memory, freezer, …, the named systemd one). */
function hierarchies(): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep > 0 && f[sep + 1] === 'cgroup' && f[4]?.startsWith(`${cgroupFs}/`)) out.push(f[4]);
  }
  return out;
}

function ensureCgroup(path: string): void {
  for (const h of hierarchies()) {
    let dir = h;
    for (const part of path.split('/').filter(Boolean)) {
      const parent = dir;
      dir = join(dir, part);
      if (existsSync(dir)) continue;
      mkdirSync(dir);
      // A new cpuset has no CPUs and no memory nodes until given its parent's.
      if (h.endsWith('/cpuset'))
        for (const f of ['cpuset.cpus', 'cpuset.mems'])
          writeFileSync(join(dir, f), readFileSync(join(parent, f), 'utf8').trim());
    }
  }
}

export function ensureNodeCgroups(name: string): void {
  ensureCgroup(`${nodeCgroup(name)}/system`);
}

function cgroupDirs(root: string): string[] {
  if (!existsSync(root)) return [];
  const out = [root];
  for (const e of readdirSync(root, { withFileTypes: true }))
    if (e.isDirectory()) out.push(...cgroupDirs(join(root, e.name)));
  return out;
}

function tasksIn(dir: string): number[] {
  return cgroupDirs(dir).flatMap((d) => {
    try {
      return readFileSync(join(d, 'tasks'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  });
}

/**
 * A power cut: freeze the node's cgroup (no process can fork or react any more),
 * SIGKILL every task in it, thaw so the kills land, until it is empty.
 */
export async function killNodeCgroup(name: string): Promise<void> {
  const freezer = hierarchies().find((h) => h.endsWith('/freezer'));
  if (!freezer) throw new Error('No freezer cgroup hierarchy: cannot stop a node at once');
  const dir = join(freezer, nodeCgroup(name));
  if (!existsSync(dir)) return;
  const setState = (s: 'FROZEN' | 'THAWED') => writeFileSync(join(dir, 'freezer.state'), s);
  for (let round = 0; round < 100; round++) {
    if (tasksIn(dir).length === 0) return;
    setState('FROZEN');
    // FREEZING until every task is stopped (a task in uninterruptible sleep can hold it up).
    for (let i = 0; i < 50 && readFileSync(join(dir, 'freezer.state'), 'utf8').trim() !== 'FROZEN'; i++)
      await sleep(10);
    for (const pid of tasksIn(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    setState('THAWED');
    await sleep(50);
  }
  throw new Error(`Tasks keep living in ${dir}: ${tasksIn(dir).join(' ')}`);
}

/** Removes the node's cgroups (empty ones only; call after killNodeCgroup). */
export function removeNodeCgroups(name: string): void {
  for (const h of hierarchies()) {
    for (const d of cgroupDirs(join(h, nodeCgroup(name))).reverse()) {
      try {
        rmdirSync(d);
      } catch {
        // Busy or gone: left for the next teardown.
      }
    }
    try {
      rmdirSync(join(h, '/tandem-e2e')); // once no node is left
    } catch {
      // Other nodes still there.
    }
  }
}

// --- configuration -------------------------------------------------------------

/** Mount-namespace setup lines (run inside the node) for the node's state directories. */
export function runtimeMountScript(name: string): string[] {
  const lines: string[] = [];
  for (const d of nodeDirs) lines.push(`mount --bind ${join(nodeRoot(name), d)} ${d}`);
  for (const d of nodeTmpfs) lines.push(`mount -t tmpfs -o mode=0755 tandem-boot ${d}`);
  return lines;
}

/** The node's directories exist (on the host for the bind sources, as mount points in the shared tree). */
export function ensureRuntimeDirs(name: string): void {
  for (const d of nodeDirs) {
    mkdirSync(join(nodeRoot(name), d), { recursive: true });
    mkdirSync(d, { recursive: true });
  }
  for (const d of nodeTmpfs) mkdirSync(d, { recursive: true });
  mkdirSync(configDir(name), { recursive: true });
}

function writeConfigs(name: string, index: number, pauseImage: string): void {
  const dir = configDir(name);
  const ip = net.nodeIp(index);
  writeFileSync(
    join(dir, 'containerd.toml'),
    `# containerd of simulated node ${name} (written by the e2e harness)
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  # Built here (npm run image): registry.k8s.io cannot be reached.
  sandbox_image = "${pauseImage}"
  # Root here lacks CAP_SYS_RESOURCE (this machine's sandbox drops it), so no process
  # may lower its oom_score_adj; the kubelet asks -998 for pod sandboxes.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`,
  );
  writeFileSync(
    join(nodeRoot(name), '/etc/cni/net.d/10-tandem-pods.conflist'),
    `${JSON.stringify(
      {
        cniVersion: '1.0.0',
        name: 'tandem-pods',
        plugins: [
          {
            type: 'bridge',
            bridge: 'cni0',
            isGateway: true,
            ipMasq: true,
            hairpinMode: true,
            ipam: {
              type: 'host-local',
              ranges: [[{ subnet: podCidr(index) }]],
              routes: [{ dst: '0.0.0.0/0' }],
              dataDir: '/var/lib/cni/networks',
            },
          },
          { type: 'portmap', capabilities: { portMappings: true } },
        ],
      },
      null,
      2,
    )}\n`,
  );
  // Certificates: the kubelet as system:node:NAME (the Node authorizer and
  // NodeRestriction apply), kube-proxy as system:kube-proxy (system:node-proxier).
  ensureClient({ name: `node-${name}`, cn: `system:node:${name}`, groups: ['system:nodes'] }, kubeletKubeconfig(name));
  ensureClient({ name: 'kube-proxy', cn: 'system:kube-proxy' }, join(state.pki, 'kube-proxy.kubeconfig'));
  const leaseSeconds = timing.heartbeatSeconds * 4; // the kubelet renews at a quarter of the duration
  writeFileSync(
    join(dir, 'kubelet.yaml'),
    `# kubelet of simulated node ${name} (written by the e2e harness)
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: ${pkiFile.ca()} }
authorization: { mode: Webhook }
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
# No systemd here, and cgroup v1 (kubelet 1.34 warns; 1.35+ needs failCgroupV1: false).
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: ${nodeCgroup(name)}
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
# Every node shares this machine's disk: eviction and image GC would act on the
# sum of all nodes. Keep them out of the way.
localStorageCapacityIsolation: false
evictionHard: { memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1% }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Node heartbeats on the harness's clock (kube-controller-manager's grace is ${timing.nodeMonitorGraceSeconds} s).
nodeLeaseDurationSeconds: ${leaseSeconds}
nodeStatusUpdateFrequency: ${timing.heartbeatSeconds}s
nodeStatusReportFrequency: 10s
serializeImagePulls: false
maxPods: 40
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
rotateCertificates: false
shutdownGracePeriod: 0s
`,
  );
  writeFileSync(
    join(dir, 'kube-proxy.yaml'),
    `# kube-proxy of simulated node ${name} (written by the e2e harness)
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: ${join(state.pki, 'kube-proxy.kubeconfig')} }
hostnameOverride: ${name}
bindAddress: ${ip}
clusterCIDR: ${clusterCidr}
mode: iptables
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
iptables: { localhostNodePorts: false }
# conntrack limits are machine-wide sysctls: leave them as they are.
conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }
`,
  );
}

export const kubeletKubeconfig = (name: string) => join(state.node(name), 'kubeconfig');

/**
 * Routes to every other node's pod range, in the node and on the host; and to the
 * Service range through the host, so the node's own processes (host-network pods:
 * the node agent) reach ClusterIPs — kube-proxy rewrites them before they leave.
 */
export function ensurePodRoutes(name: string, index: number): void {
  run('ip', ['-n', nodeNs.netns(name), 'route', 'replace', net.serviceCidr, 'via', net.hostIp]);
  for (let j = 0; j < maxNodes; j++) {
    if (j === index) continue;
    run('ip', ['-n', nodeNs.netns(name), 'route', 'replace', podCidr(j), 'via', net.nodeIp(j)]);
  }
  run('ip', ['route', 'replace', podCidr(index), 'via', net.nodeIp(index), 'dev', net.bridge]);
}

// --- daemons -------------------------------------------------------------------

const daemon = {
  containerd: (n: string) => `containerd-${n}`,
  kubelet: (n: string) => `kubelet-${n}`,
  kubeProxy: (n: string) => `kube-proxy-${n}`,
} as const;

export const runtimeDaemons = (name: string) => Object.values(daemon).map((d) => d(name));

/** Starts `argv` inside the node's namespaces and its system cgroup, as a harness daemon. */
function startInNode(name: string, daemonName: string, argv: readonly string[]): void {
  const system = `${nodeCgroup(name)}/system`;
  const join_ = hierarchies()
    .map((h) => `echo $$ > ${join(h, system, 'cgroup.procs')}`)
    .join('\n');
  const ns = [`--net=${nodeNs.netnsPath(name)}`, `--mount=${nodeNs.mnt(name)}`, `--uts=${nodeNs.uts(name)}`, '--wd=/'];
  const quoted = argv.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  startDaemon(daemonName, 'sh', ['-euc', `${join_}\nexec nsenter ${ns.join(' ')} -- ${quoted}`]);
}

function nsenterIn(name: string, argv: readonly string[]) {
  return run(
    'nsenter',
    [`--net=${nodeNs.netnsPath(name)}`, `--mount=${nodeNs.mnt(name)}`, `--uts=${nodeNs.uts(name)}`, '--', ...argv],
    { allowFail: true },
  );
}

async function startContainerd(name: string): Promise<void> {
  if (daemonPid(daemon.containerd(name)) !== undefined) return;
  startInNode(name, daemon.containerd(name), [
    'containerd',
    '--config',
    join(configDir(name), 'containerd.toml'),
    '--log-level',
    'warn',
  ]);
  await waitFor(
    `containerd on ${name}`,
    () => {
      if (daemonPid(daemon.containerd(name)) === undefined)
        throw new Error(`containerd on ${name} exited:\n${logTail(daemon.containerd(name))}`);
      return nsenterIn(name, ['ctr', '--address', '/run/containerd/containerd.sock', 'version']).status === 0;
    },
    30_000,
    () => logTail(daemon.containerd(name)),
  );
}

function startKubeProxy(name: string): void {
  if (daemonPid(daemon.kubeProxy(name)) !== undefined) return;
  startInNode(name, daemon.kubeProxy(name), [bin.kubeProxy, `--config=${join(configDir(name), 'kube-proxy.yaml')}`]);
}

function startKubelet(name: string, index: number): boolean {
  if (daemonPid(daemon.kubelet(name)) !== undefined) return false;
  startInNode(name, daemon.kubelet(name), [
    bin.kubelet,
    `--config=${join(configDir(name), 'kubelet.yaml')}`,
    `--kubeconfig=${kubeletKubeconfig(name)}`,
    `--hostname-override=${name}`,
    `--node-ip=${net.nodeIp(index)}`,
    '--node-labels=tandem.dev/e2e-node=true',
    '--v=1',
  ]);
  return true;
}

/** When a node's runtime started: containerd, and the kubelet (undefined: it was running already). */
export type RuntimeStart = { containerdMs: number; imagesMs: number; kubeletStartedAt?: number };

/**
 * containerd first (with the images loaded into it), then kube-proxy and the
 * kubelet; each is left alone when it already runs. `loadImages` runs once
 * containerd answers.
 */
export async function startRuntime(
  name: string,
  index: number,
  o: { pauseImage: string; loadImages: () => void },
): Promise<RuntimeStart> {
  ensureNodeCgroups(name);
  writeConfigs(name, index, o.pauseImage);
  const t0 = Date.now();
  await startContainerd(name);
  const t1 = Date.now();
  o.loadImages();
  const t2 = Date.now();
  startKubeProxy(name);
  const started = startKubelet(name, index);
  return { containerdMs: t1 - t0, imagesMs: t2 - t1, ...(started ? { kubeletStartedAt: Date.now() } : {}) };
}

/** The runtime daemons' pid files go (their processes die with the node's cgroup). */
export async function forgetRuntime(name: string): Promise<void> {
  for (const d of runtimeDaemons(name)) await stopDaemon(d, 0);
}
