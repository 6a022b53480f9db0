// npm run bench:control: the control plane at scale (issue 17 item 6). A real etcd and
// kube-apiserver (the e2e harness's, from ~/.cache/tandem, in a state dir of its own),
// tandem's CRDs, the real controller process (bin/tandem-controller.js, leader election
// on), M simulated nodes and N ReplicatedVolumes of two replicas each, as users create
// them (a StoragePool directory, spec.primary, failover on by default).
//
//   npm run bench:control                               500 volumes, 50 nodes, 60 s at rest
//   npm run bench:control -- --volumes N --nodes M --rest-seconds S
//   npm run bench:control -- --quick                    20 volumes, 5 nodes, 15 s at rest
//   npm run bench:control -- --json FILE                also every figure as JSON
//
// Each simulated node (scripts/bench-control/sim-node.ts) makes the API calls of a node
// agent at the agent's own rate (a status report per replica every 5 s, every second
// while apart from the peer, the fence when a Primary loses its peer) and of a kubelet
// (its Lease every 10 s, the Node's status every 5 min). No engines, no disks, no kubelets.
//
// What it measures, in order:
//   converge   time from the first volume created until every volume is Ready
//   at rest    API requests per volume per minute over --rest-seconds, by client: the
//              controller, the agents and the kubelets authenticate with client certificates
//              of their own, and a FlowSchema per user (priority level exempt: nothing is
//              queued) makes the API server count them apart
//              (apiserver_flowcontrol_dispatched_requests_total{flow_schema}); the split by
//              verb and resource (apiserver_request_total, every client) is printed under it.
//              Also the controller's reconciles per volume per minute (its own /metrics).
//   node loss  the first node holds the Primary of ~4% of the volumes and a replica of ~10%.
//              Its agent and kubelet stop, and its Ready condition is written Unknown with the
//              unreachable taints (what kube-controller-manager's node lifecycle controller
//              writes; here at once, as if its grace period had just run out). The controller
//              may act once the condition is failover.nodeNotReadySeconds old, or once the
//              agent has been silent that long (roles.ts): per volume, the earlier of the two
//              (never before the node died) is when the loss is established. Decided: status.lastFailover names the lost
//              node (failed over), or the Ready condition says FailoverBlocked (with its
//              reason). Printed: p50/p99/max from established to decided, and to the new
//              Primary's agent reporting Primary; the volumes that only lost a Secondary, to
//              the volume leaving Ready. Checked: every affected volume decided, the lost node
//              fenced in each failover, never two replicas ordered Primary, never two live
//              agents reporting Primary.
//   memory     the controller's VmRSS at rest and after the loss, VmHWM (its peak), V8 heap
//
// Needs root (the API server binds to the e2e bridge's address) and no local cluster
// running (one per machine). Run it under flock /tmp/tandem-heavy.lock.
import { spawn, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  openSync,
  closeSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import yaml from 'js-yaml';
import pino from 'pino';
import { CONDITIONS, DEFAULT_OPERATOR_NAMESPACE, GROUP, KINDS, VERSION } from '../src/api/names.ts';
import { SupervisedInformer } from '../src/runtime/informer.ts';
import { collectionPath, listCustom } from '../src/runtime/kube.ts';
import { SimNode, type World } from './bench-control/sim-node.ts';
import { parseProcStat, TICKS_PER_SECOND } from './proc-stat.ts';

const repoRoot = resolve(import.meta.dirname, '..');
const NAMESPACE = 'bench';
const POOL = 'bench';
/** failover.nodeNotReadySeconds as users get it (the CRD's default). */
const GRACE_S = 10;
/** roles.ts MIN_AGENT_SILENCE_MS: silence is believed after max(grace, 7 s). */
const SILENCE_MS = Math.max(GRACE_S * 1000, 7000);
const CLIENTS = {
  controller: { name: 'bench-controller', cn: 'tandem-controller' },
  agents: { name: 'bench-agents', cn: 'tandem-bench-agents' },
  kubelets: { name: 'bench-kubelets', cn: 'tandem-bench-kubelets' },
} as const;
type Client = keyof typeof CLIENTS;
const BENCH_GROUP = 'tandem-bench';

export type BenchControlOptions = {
  volumes: number;
  nodes: number;
  restSeconds: number;
  log?: (msg: string) => void;
  /** Aborting it stops the bench and everything it started. */
  signal?: AbortSignal;
};

export type Stats = { n: number; p50: number; p99: number; max: number };

export type BenchControlResult = {
  volumes: number;
  nodes: number;
  restSeconds: number;
  convergeSeconds: number;
  /** API requests per volume per minute at rest, by client. */
  perVolumeMinute: Record<Client, number>;
  /** Requests at rest by verb and resource (every client), per minute. */
  byResource: { verb: string; resource: string; perMinute: number }[];
  reconcilesPerVolumeMinute: number;
  /** The controller's CPU at rest, percent of one core. */
  cpuPercent: number;
  memory: {
    restRssMiB: number;
    afterLossRssMiB: number;
    peakRssMiB: number;
    heapUsedMiB: number;
    heapTotalMiB: number;
  };
  loss: {
    node: string;
    affected: number;
    decided: number;
    failedOver: number;
    blocked: { volume: string; message: string }[];
    /** ms from the loss established (per volume) to the decision seen in the volume's status. */
    decide: Stats;
    /** ms from the condition written to the decision (includes the grace period). */
    decideSinceCondition: Stats;
    /** ms from the loss established to the new Primary's agent reporting Primary. */
    promoted: Stats;
    secondaryLost: number;
    /** ms from the condition written to the volume leaving Ready, for volumes that lost their Secondary. */
    degraded: Stats;
    undecided: string[];
    twoPrimaries: string[];
    unfenced: string[];
  };
};

function stats(xs: number[]): Stats {
  if (xs.length === 0) return { n: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN };
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return { n: s.length, p50: at(0.5), p99: at(0.99), max: s[s.length - 1]! };
}

/** Prometheus text format: every sample as name, labels, value. */
function parseMetrics(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

function procStatus(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const t = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  return (t.user + t.system) / TICKS_PER_SECOND;
}

function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const s = connect({ host, port, timeout: 1000 });
    const end = (open: boolean) => {
      s.destroy();
      done(open);
    };
    s.on('connect', () => end(true));
    s.on('timeout', () => end(false));
    s.on('error', () => end(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => done(port));
    });
    srv.on('error', fail);
  });
}

async function pool<T>(items: readonly T[], width: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

/**
 * The volumes' nodes: the first node (the one lost) holds a replica of ~10% of the volumes
 * and the Primary of ~4%; the others are spread evenly over the other nodes.
 */
export function layout(volumes: number, nodes: number): { name: string; primary: string; secondary: string }[] {
  const names = nodeNames(nodes);
  const touching = Math.min(volumes, Math.max(4, Math.round(volumes / 10)));
  const primaries = Math.min(touching, Math.max(2, Math.round(volumes / 25)));
  const others = names.slice(1);
  const out: { name: string; primary: string; secondary: string }[] = [];
  const m = others.length;
  /** The j-th volume away from the lost node: every pair of the other nodes in turn. */
  const pair = (j: number): [string, string] => [others[j % m]!, others[(j + 1 + (Math.floor(j / m) % (m - 1))) % m]!];
  for (let i = 0; i < volumes; i++) {
    const name = `vol-${String(i).padStart(4, '0')}`;
    if (i < primaries) out.push({ name, primary: names[0]!, secondary: others[i % others.length]! });
    else if (i < touching) out.push({ name, primary: others[i % others.length]!, secondary: names[0]! });
    else {
      const [p, s] = pair(i - touching);
      out.push({ name, primary: p, secondary: s });
    }
  }
  return out;
}

export function nodeNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `sim-${String(i).padStart(3, '0')}`);
}

type RvView = {
  name: string;
  primary?: string;
  epoch: number;
  phase?: string;
  ready?: { status: string; reason: string; message: string };
  lastFailover?: { from: string; to: string; epoch: number };
  fence?: { node: string };
};

function rvView(o: k8s.KubernetesObject): RvView {
  const s = (o as { status?: Record<string, unknown> }).status ?? {};
  const conditions = (s.conditions as { type: string; status: string; reason: string; message: string }[]) ?? [];
  const ready = conditions.find((c) => c.type === CONDITIONS.ready);
  return {
    name: o.metadata?.name ?? '',
    primary: s.primary as string | undefined,
    epoch: (s.epoch as number | undefined) ?? 0,
    phase: s.phase as string | undefined,
    ...(ready ? { ready } : {}),
    ...(s.lastFailover ? { lastFailover: s.lastFailover as RvView['lastFailover'] } : {}),
    ...(s.fence ? { fence: s.fence as RvView['fence'] } : {}),
  };
}

export async function benchControl(o: BenchControlOptions): Promise<BenchControlResult> {
  const log = o.log ?? ((m: string) => console.error(`[bench:control] ${m}`));
  // Interrupted (o.signal): every wait ends at once and the finally below cleans up.
  const pause = (ms: number) => sleep(ms, undefined, o.signal ? { signal: o.signal } : {});
  // The harness reads its state dir when first imported: a directory of our own, never a cluster's.
  const stateDir = mkdtempSync(join(tmpdir(), 'tandem-bench-control-'));
  process.env.TANDEM_CLUSTER_DIR = stateDir;
  const paths = await import('../test/e2e/harness/paths.ts');
  const cp = await import('../test/e2e/harness/control-plane.ts');
  const certs = await import('../test/e2e/harness/certs.ts');
  const nodesHarness = await import('../test/e2e/harness/nodes.ts');
  const { logTail } = await import('../test/e2e/harness/proc.ts');
  if (paths.stateDir !== stateDir) throw new Error(`the harness was loaded before with state dir ${paths.stateDir}`);

  // Only a local cluster can listen there, on the bridge's address (without the bridge the
  // address is not ours, and a connection may go anywhere). One that was just stopped may take
  // a few seconds to let go of the port.
  const bridgeExisted = existsSync(`/sys/class/net/${paths.net.bridge}`);
  const taken = async () => bridgeExisted && (await tcpOpen(paths.net.hostIp, paths.ports.apiserver));
  for (let i = 0; i < 20 && (await taken()); i++) await pause(1000);
  if (await taken())
    throw new Error(
      `Something listens on ${paths.apiserverUrl} already (a local cluster? one per machine): stop it first (npm run cluster:down)`,
    );
  cp.ensureBinaries();
  let controller: ChildProcess | undefined;
  const sims: SimNode[] = [];
  const informers: SupervisedInformer<k8s.KubernetesObject>[] = [];
  let ok = false;
  try {
    nodesHarness.ensureBridge();
    log(`Starting etcd and kube-apiserver (state in ${stateDir})`);
    await cp.startEtcd();
    await cp.startApiserver();
    const kubeconfig = (name: string) => join(paths.state.pki, `${name}.kubeconfig`);
    for (const c of Object.values(CLIENTS))
      certs.ensureClient({ name: c.name, cn: c.cn, groups: [BENCH_GROUP] }, kubeconfig(c.name));
    const kcOf = (path: string) => {
      const kc = new k8s.KubeConfig();
      kc.loadFromFile(path);
      return kc;
    };
    const admin = kcOf(paths.state.kubeconfig);
    const http = cp.adminHttp();
    const must = async (method: string, path: string, body?: unknown, okCodes = [200, 201, 409]) => {
      const r = await http.request(method, path, { body, timeoutMs: 30_000 });
      if (!okCodes.includes(r.status)) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 500)}`);
      return r;
    };

    // --- the API: namespaces, CRDs, who may do what, and a FlowSchema per client -----------
    for (const ns of [NAMESPACE, DEFAULT_OPERATOR_NAMESPACE, 'kube-node-lease'])
      await must('POST', '/api/v1/namespaces', { metadata: { name: ns } });
    for (const f of readdirSync(join(repoRoot, 'crds')).filter((f) => f.endsWith('.yaml')))
      await must(
        'POST',
        '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
        yaml.load(readFileSync(join(repoRoot, 'crds', f), 'utf8')),
      );
    for (const plural of Object.values(KINDS).map((k) => k.plural)) {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const r = await http.request(
          'GET',
          `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${plural}.${GROUP}`,
        );
        const conds = (r.body as { status?: { conditions?: { type: string; status: string }[] } }).status?.conditions;
        if (conds?.some((c) => c.type === 'Established' && c.status === 'True')) break;
        if (Date.now() > deadline) throw new Error(`CRD ${plural} not Established`);
        await pause(200);
      }
    }
    // The bench's own clients are cluster admins by RBAC (not system:masters, whose requests
    // the API server's exempt FlowSchema would take before ours).
    await must('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
      metadata: { name: 'tandem-bench' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
      subjects: [{ kind: 'Group', apiGroup: 'rbac.authorization.k8s.io', name: BENCH_GROUP }],
    });
    for (const c of Object.values(CLIENTS))
      await must('POST', '/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas', {
        metadata: { name: c.name },
        spec: {
          priorityLevelConfiguration: { name: 'exempt' },
          matchingPrecedence: 2,
          rules: [
            {
              subjects: [{ kind: 'User', user: { name: c.cn } }],
              resourceRules: [
                { verbs: ['*'], apiGroups: ['*'], resources: ['*'], clusterScope: true, namespaces: ['*'] },
              ],
              nonResourceRules: [{ verbs: ['*'], nonResourceURLs: ['*'] }],
            },
          ],
        },
      });
    const grants = nodeNames(o.nodes).map((node) => ({
      node,
      directory: '/var/lib/tandem/pools/bench',
      capacity: '100Ti',
    }));
    await must('POST', `/apis/${GROUP}/${VERSION}/storagepools`, {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: KINDS.pool.kind,
      metadata: { name: POOL },
      spec: { nodes: grants },
    });

    // --- nodes ---------------------------------------------------------------------------
    const quiet = pino({ level: 'fatal', base: { component: 'bench' } });
    const world: World = { lostAt: new Map() };
    const agentKc = kcOf(kubeconfig(CLIENTS.agents.name));
    const kubeletKc = kcOf(kubeconfig(CLIENTS.kubelets.name));
    const names = nodeNames(o.nodes);
    for (const [i, name] of names.entries())
      sims.push(
        new SimNode({
          name,
          ip: `10.78.${Math.floor(i / 250)}.${(i % 250) + 2}`,
          world,
          agentKc,
          kubeletKc,
          log: quiet,
        }),
      );
    log(`Registering ${o.nodes} simulated nodes`);
    await pool(sims, 8, (s) => s.register());
    await pool(sims, 8, (s) => s.start());

    // --- the observer: every volume and replica as the API server has them ------------------
    const rvs = new Map<string, RvView>();
    const decidedAt = new Map<string, number>();
    const degradedAt = new Map<string, number>();
    const promotedAt = new Map<string, number>();
    let watch: { victim: string; affected: Map<string, number>; secondaryLost: Set<string> } | undefined;
    const custom = admin.makeApiClient(k8s.CustomObjectsApi);
    // Supervised: under load a watch breaks now and then, and a plain informer stops for good.
    const observer = <T extends k8s.KubernetesObject>(plural: string, onChange: (o: T) => void) =>
      new SupervisedInformer<T>({
        kc: admin,
        log: quiet,
        path: collectionPath(plural),
        list: listCustom(custom, plural),
        onChange,
      });
    const onRv = (obj: k8s.KubernetesObject) => {
      const v = rvView(obj);
      rvs.set(v.name, v);
      if (!watch) return;
      const t = Date.now();
      const before = watch.affected.get(v.name);
      if (before !== undefined && !decidedAt.has(v.name)) {
        const failedOver = v.lastFailover?.from === watch.victim && v.lastFailover.epoch > before;
        if (failedOver || v.ready?.reason === 'FailoverBlocked') decidedAt.set(v.name, t);
      }
      if (watch.secondaryLost.has(v.name) && !degradedAt.has(v.name) && v.ready?.status !== 'True')
        degradedAt.set(v.name, t);
    };
    const onRvr = (obj: k8s.KubernetesObject) => {
      if (!watch) return;
      const r = obj as { spec?: { volume?: string; node?: string }; status?: { role?: string; epoch?: number } };
      const v = r.spec?.volume ?? '';
      const before = watch.affected.get(v);
      if (
        before !== undefined &&
        !promotedAt.has(v) &&
        r.spec?.node !== watch.victim &&
        r.status?.role === 'Primary' &&
        (r.status.epoch ?? 0) > before
      )
        promotedAt.set(v, Date.now());
    };
    informers.push(observer(KINDS.volume.plural, onRv), observer(KINDS.replica.plural, onRvr));
    for (const i of informers) await i.start();

    // --- the controller, as a process of its own ------------------------------------------
    const metricsPort = await freePort();
    const controllerLog = join(paths.state.logs, 'tandem-controller.log');
    const fd = openSync(controllerLog, 'a');
    controller = spawn(
      process.execPath,
      [join(repoRoot, 'bin/tandem-controller.js'), '--metrics-port', String(metricsPort)],
      {
        stdio: ['ignore', fd, fd],
        env: {
          ...process.env,
          KUBECONFIG: kubeconfig(CLIENTS.controller.name),
          POD_NAMESPACE: DEFAULT_OPERATOR_NAMESPACE,
          POD_NAME: 'tandem-controller-bench',
          LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
        },
      },
    );
    closeSync(fd);
    const pid = controller.pid!;
    const controllerMetrics = async () => {
      const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(10_000) });
      return parseMetrics(await r.text());
    };
    {
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (controller.exitCode !== null) throw new Error(`the controller exited:\n${logTail('tandem-controller')}`);
        const r = await fetch(`http://127.0.0.1:${metricsPort}/readyz`).catch(() => undefined);
        if (r?.ok) break;
        if (Date.now() > deadline) throw new Error(`the controller is not ready:\n${logTail('tandem-controller')}`);
        await pause(200);
      }
    }

    // --- volumes -----------------------------------------------------------------------
    const plan = layout(o.volumes, o.nodes);
    log(`Creating ${o.volumes} ReplicatedVolumes`);
    const t0 = Date.now();
    await pool(plan, 8, async (v) => {
      await must('POST', `/apis/${GROUP}/${VERSION}/namespaces/${NAMESPACE}/${KINDS.volume.plural}`, {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: KINDS.volume.kind,
        metadata: { name: v.name, namespace: NAMESPACE },
        spec: {
          pool: POOL,
          protocol: 'C',
          size: '1Gi',
          primary: v.primary,
          replicas: [{ node: v.primary }, { node: v.secondary }],
        },
      });
    });
    const readyNow = () =>
      plan.filter((v) => {
        const s = rvs.get(v.name);
        return s?.phase === 'Ready' && s.primary === v.primary;
      }).length;
    {
      // Generous: on a small machine the agents' reports alone can keep the API server busy.
      const deadline = Date.now() + 300_000 + 1000 * o.volumes;
      let shown = 0;
      while (readyNow() < o.volumes) {
        if (controller.exitCode !== null) throw new Error(`the controller exited:\n${logTail('tandem-controller')}`);
        if (Date.now() > deadline) throw new Error(`only ${readyNow()} of ${o.volumes} volumes Ready`);
        if (Date.now() - shown > 15_000) {
          const phases = new Map<string, number>();
          for (const v of rvs.values()) phases.set(v.phase ?? '-', (phases.get(v.phase ?? '-') ?? 0) + 1);
          log(`${readyNow()} of ${o.volumes} volumes Ready (${[...phases].map(([p, n]) => `${p} ${n}`).join(', ')})`);
          shown = Date.now();
        }
        await pause(250);
      }
    }
    const convergeSeconds = (Date.now() - t0) / 1000;
    log(`All ${o.volumes} volumes Ready after ${convergeSeconds.toFixed(1)} s`);

    // --- at rest -------------------------------------------------------------------------
    await pause(10_000); // the last creations' echoes (node access, events) die down
    const apiMetrics = async () => parseMetrics((await must('GET', '/metrics', undefined, [200])).text);
    const a0 = await apiMetrics();
    const c0 = await controllerMetrics();
    const tRest = Date.now();
    const cpu0 = cpuSeconds(pid);
    log(`At rest for ${o.restSeconds} s`);
    await pause(o.restSeconds * 1000);
    const a1 = await apiMetrics();
    const c1 = await controllerMetrics();
    const minutes = (Date.now() - tRest) / 60_000;
    const cpuPercent = ((cpuSeconds(pid) - cpu0) / (minutes * 60)) * 100;
    const sum = (ms: ReturnType<typeof parseMetrics>, name: string, match: (l: Record<string, string>) => boolean) =>
      ms.filter((m) => m.name === name && match(m.labels)).reduce((s, m) => s + m.value, 0);
    const perVolumeMinute = Object.fromEntries(
      (Object.keys(CLIENTS) as Client[]).map((c) => {
        const fs = (l: Record<string, string>) => l.flow_schema === CLIENTS[c].name;
        const n =
          sum(a1, 'apiserver_flowcontrol_dispatched_requests_total', fs) -
          sum(a0, 'apiserver_flowcontrol_dispatched_requests_total', fs);
        return [c, n / o.volumes / minutes];
      }),
    ) as Record<Client, number>;
    const byKey = new Map<string, number>();
    for (const [ms, sign] of [
      [a1, 1],
      [a0, -1],
    ] as const)
      for (const m of ms)
        if (m.name === 'apiserver_request_total' && m.labels.resource) {
          const k = `${m.labels.verb} ${m.labels.resource}${m.labels.subresource ? `/${m.labels.subresource}` : ''}`;
          byKey.set(k, (byKey.get(k) ?? 0) + sign * m.value);
        }
    const byResource = [...byKey]
      .filter(([, n]) => n > 0)
      .map(([k, n]) => ({ verb: k.split(' ')[0]!, resource: k.split(' ')[1]!, perMinute: n / minutes }))
      .sort((x, y) => y.perMinute - x.perMinute);
    const reconciles = sum(c1, 'tandem_reconcile_total', () => true) - sum(c0, 'tandem_reconcile_total', () => true);
    const restMem = procStatus(pid);
    const heap = (name: string) => sum(c1, `tandem_controller_nodejs_heap_size_${name}_bytes`, () => true) / 2 ** 20;

    // --- node loss -----------------------------------------------------------------------
    const victim = names[0]!;
    const victimSim = sims[0]!;
    const affected = new Map<string, number>();
    const secondaryLost = new Set<string>();
    for (const v of plan) {
      const s = rvs.get(v.name)!;
      if (s.primary === victim) affected.set(v.name, s.epoch);
      else if (v.primary === victim || v.secondary === victim) secondaryLost.add(v.name);
    }
    log(`Losing node ${victim}: ${affected.size} Primaries, ${secondaryLost.size} Secondaries`);
    const lostAt = Date.now();
    world.lostAt.set(victim, lostAt);
    await victimSim.stop();
    const lastReport = new Map<string, number>();
    for (const r of victimSim.replicas()) {
      const key = `${r.metadata?.namespace}/${r.metadata?.name}`;
      // roles.ts agentSilence: the later of the replica's report and its agent's Lease.
      const at = Math.max(victimSim.lastReport.get(key) ?? -Infinity, victimSim.lastLease ?? -Infinity);
      const vol = (r as { spec?: { volume?: string } }).spec?.volume;
      if (Number.isFinite(at) && vol) lastReport.set(vol, at);
    }
    watch = { victim, affected, secondaryLost };
    // What kube-controller-manager writes when a node's lease runs out: Ready Unknown, and the taints.
    const written = new Date();
    const stamp = written.toISOString().replace(/\.\d+Z$/, 'Z');
    const core = admin.makeApiClient(k8s.CoreV1Api);
    const node = await core.readNode({ name: victim });
    const conditions = (node.status?.conditions ?? []).map((c) => ({
      ...c,
      status: 'Unknown',
      reason: 'NodeStatusUnknown',
      message: 'Kubelet stopped posting node status.',
      lastTransitionTime: stamp as unknown as Date,
    }));
    await core.replaceNodeStatus({ name: victim, body: { ...node, status: { ...node.status, conditions } } });
    const tWritten = Date.now();
    const tainted = await core.readNode({ name: victim });
    await core.replaceNode({
      name: victim,
      body: {
        ...tainted,
        spec: {
          ...tainted.spec,
          taints: [
            { key: 'node.kubernetes.io/unreachable', effect: 'NoSchedule', timeAdded: written },
            { key: 'node.kubernetes.io/unreachable', effect: 'NoExecute', timeAdded: written },
          ],
        },
      },
    });
    // The controller reads lastTransitionTime in whole seconds.
    const conditionSince = Date.parse(stamp);
    // Never before the node died: an agent already late with its reports (a busy API server)
    // starts the silence clock early, but nothing is lost before the loss.
    const established = (v: string) =>
      Math.max(
        lostAt,
        Math.min(conditionSince + GRACE_S * 1000, (lastReport.get(v) ?? Number.POSITIVE_INFINITY) + SILENCE_MS),
      );
    const deadline = tWritten + GRACE_S * 1000 + 60_000;
    while (Date.now() < deadline) {
      const pending =
        [...affected.keys()].filter((v) => !decidedAt.has(v) || !promotedAt.has(v)).length +
        [...secondaryLost].filter((v) => !degradedAt.has(v)).length;
      if (pending === 0) break;
      await pause(100);
    }
    await pause(3000); // let late writes land before the checks
    const afterMem = procStatus(pid);

    // --- checks: fenced, never two Primaries -------------------------------------------------
    const replicas = (await custom.listNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: NAMESPACE,
      plural: KINDS.replica.plural,
    })) as { items: { spec: { volume: string; node: string; role: string }; status?: { role?: string } }[] };
    const twoPrimaries: string[] = [];
    const byVolume = new Map<string, typeof replicas.items>();
    for (const r of replicas.items) byVolume.set(r.spec.volume, [...(byVolume.get(r.spec.volume) ?? []), r]);
    for (const [v, rs] of byVolume) {
      const ordered = rs.filter((r) => r.spec.role === 'Primary').length;
      const live = rs.filter((r) => r.spec.node !== victim && r.status?.role === 'Primary').length;
      if (ordered > 1 || live > 1) twoPrimaries.push(v);
    }
    const unfenced: string[] = [];
    const blocked: { volume: string; message: string }[] = [];
    let failedOver = 0;
    for (const v of affected.keys()) {
      const s = rvs.get(v)!;
      if (s.lastFailover?.from === victim) {
        failedOver++;
        if (s.fence?.node !== victim || s.primary === victim) unfenced.push(v);
      } else if (s.ready?.reason === 'FailoverBlocked') blocked.push({ volume: v, message: s.ready.message });
    }
    const decidedVols = [...affected.keys()].filter((v) => decidedAt.has(v));
    const result: BenchControlResult = {
      volumes: o.volumes,
      nodes: o.nodes,
      restSeconds: o.restSeconds,
      convergeSeconds,
      perVolumeMinute,
      byResource,
      reconcilesPerVolumeMinute: reconciles / o.volumes / minutes,
      cpuPercent,
      memory: {
        restRssMiB: restMem.rss,
        afterLossRssMiB: afterMem.rss,
        peakRssMiB: afterMem.hwm,
        heapUsedMiB: heap('used'),
        heapTotalMiB: heap('total'),
      },
      loss: {
        node: victim,
        affected: affected.size,
        decided: decidedVols.length,
        failedOver,
        blocked,
        decide: stats(decidedVols.map((v) => decidedAt.get(v)! - established(v))),
        decideSinceCondition: stats(decidedVols.map((v) => decidedAt.get(v)! - tWritten)),
        promoted: stats([...promotedAt].map(([v, t]) => t - established(v))),
        secondaryLost: secondaryLost.size,
        degraded: stats([...degradedAt.values()].map((t) => t - tWritten)),
        undecided: [...affected.keys()].filter((v) => !decidedAt.has(v)),
        twoPrimaries,
        unfenced,
      },
    };
    ok = true;
    return result;
  } finally {
    for (const i of informers) await i.stop();
    for (const s of sims) await s.stop().catch(() => undefined);
    if (controller && controller.exitCode === null) {
      controller.kill('SIGTERM');
      await Promise.race([new Promise((r) => controller!.once('exit', r)), sleep(15_000)]);
      if (controller.exitCode === null && controller.signalCode === null) controller.kill('SIGKILL');
    }
    await cp.stopControlPlane();
    if (!bridgeExisted && existsSync(`/sys/class/net/${paths.net.bridge}`))
      spawn('ip', ['link', 'del', paths.net.bridge], { stdio: 'ignore' });
    if (ok) rmSync(stateDir, { recursive: true, force: true });
    else log(`Kept ${stateDir} (logs/ has the controller's, etcd's and kube-apiserver's logs)`);
  }
}

function printResult(r: BenchControlResult): void {
  const ms = (s: Stats) => `${s.p50.toFixed(0)} / ${s.p99.toFixed(0)} / ${s.max.toFixed(0)} ms (n=${s.n})`;
  const lines = [
    `Control plane at scale: ${r.volumes} volumes (2 replicas each) on ${r.nodes} simulated nodes`,
    '',
    `converge (create → all Ready)            ${r.convergeSeconds.toFixed(1)} s`,
    `controller RSS at rest                   ${r.memory.restRssMiB.toFixed(1)} MiB (V8 heap ${r.memory.heapUsedMiB.toFixed(1)} of ${r.memory.heapTotalMiB.toFixed(1)} MiB)`,
    `controller RSS after the node loss       ${r.memory.afterLossRssMiB.toFixed(1)} MiB`,
    `controller RSS peak (VmHWM)              ${r.memory.peakRssMiB.toFixed(1)} MiB`,
    '',
    `at rest, ${r.restSeconds} s: API requests per volume per minute`,
    `  controller                             ${r.perVolumeMinute.controller.toFixed(2)}`,
    `  node agents (simulated)                ${r.perVolumeMinute.agents.toFixed(2)}`,
    `  kubelets (simulated leases, Node status) ${r.perVolumeMinute.kubelets.toFixed(2)}`,
    `  controller reconciles per volume per minute ${r.reconcilesPerVolumeMinute.toFixed(2)}`,
    `  controller CPU                         ${r.cpuPercent.toFixed(1)} % of a core`,
    '  by verb and resource (every client), per minute:',
    ...r.byResource.slice(0, 12).map((x) => `    ${`${x.verb} ${x.resource}`.padEnd(44)} ${x.perMinute.toFixed(1)}`),
    '',
    `node loss: ${r.loss.node}, Primary of ${r.loss.affected} volumes, Secondary of ${r.loss.secondaryLost}`,
    `  decided                                ${r.loss.decided} of ${r.loss.affected} (failed over ${r.loss.failedOver}, blocked ${r.loss.blocked.length})`,
    `  established → decided p50/p99/max      ${ms(r.loss.decide)}`,
    `  condition written → decided            ${ms(r.loss.decideSinceCondition)}`,
    `  established → new Primary reports it   ${ms(r.loss.promoted)}`,
    `  Secondary lost: written → not Ready    ${ms(r.loss.degraded)}`,
    `  undecided ${r.loss.undecided.length}, two Primaries ${r.loss.twoPrimaries.length}, failed over without the fence ${r.loss.unfenced.length}`,
    ...r.loss.blocked.slice(0, 5).map((b) => `  blocked ${b.volume}: ${b.message}`),
  ];
  console.log(lines.join('\n'));
}

function flag(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

async function main(argv: string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const num = (name: string, fallback: number) => {
    const v = flag(argv, name);
    const n = v === undefined ? fallback : Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} ${v}: give a whole number above 0`);
    return n;
  };
  const o: BenchControlOptions = {
    volumes: num('--volumes', quick ? 20 : 500),
    nodes: num('--nodes', quick ? 5 : 50),
    restSeconds: num('--rest-seconds', quick ? 15 : 60),
  };
  if (o.nodes < 3) throw new Error('--nodes: at least 3 (one is lost, its volumes need two others)');
  const ac = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.once(sig, () => ac.abort(new Error(`Interrupted (${sig})`)));
  const r = await benchControl({ ...o, signal: ac.signal });
  printResult(r);
  const json = flag(argv, '--json');
  if (json) writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  const bad = r.loss.undecided.length + r.loss.twoPrimaries.length + r.loss.unfenced.length;
  process.exitCode = bad > 0 ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then(
    () => process.exit(),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
