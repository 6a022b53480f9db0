// npm run cluster:deploy — a development shortcut: tandem's controller and agents as
// host processes instead of the chart's pods (helm install with the image, as a user
// does it, is test/e2e/chart-pods.test.ts and npm run lab:cluster):
//   1. `helm upgrade --install tandem helm/tandem` (CRDs, RBAC, ServiceAccounts) with the
//      Deployment scaled to 0 and the DaemonSet selecting no node, so no pod competes…
//   2. …with the controller as a process on the host and one node agent per simulated node
//      inside that node's namespaces (cluster:exec), each authenticated with a token of
//      the chart's own ServiceAccount, so the chart's RBAC is what is exercised.
// The agents run tandemadm themselves here (no --engine-host): their engines are
// detached host processes of the node and outlive them, as they outlive the agent's
// pod in the chart, where they run in the engine host's pod (test/e2e/engine-host.test.ts).
//
//   node scripts/cluster-deploy.ts [deploy]            install/upgrade and (re)start everything
//   node scripts/cluster-deploy.ts undeploy            stop the processes (the release stays)
//   node scripts/cluster-deploy.ts start-controller [controller-2]   (re)start the controller (or a standby)
//   node scripts/cluster-deploy.ts start-agent NODE    (re)start one agent
//   node scripts/cluster-deploy.ts kill|stop controller|agent-NODE   SIGKILL / SIGTERM it (engines keep running)
//
// Logs: .cluster/logs/tandem-controller.log, .cluster/logs/tandem-agent-NODE.log.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { apiserverUrl, bin, repoRoot, state } from '../test/e2e/harness/paths.ts';

export const release = { name: 'tandem', namespace: 'tandem-system' } as const;
const deployDir = join(state.run, '..', 'deploy');
export const controllerMetricsPort = 18080;
export const agentMetricsPort = 9942;
const cli = join(repoRoot, 'test/e2e/harness/cli.ts');
const log = (m: string) => console.error(`[deploy] ${m}`);

function tool(file: string, args: string[], input?: string): string {
  return execFileSync(file, args, {
    env: { ...process.env, KUBECONFIG: state.kubeconfig },
    encoding: 'utf8',
    input: input ?? '',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

function nodes(): string[] {
  const out = execFileSync(process.execPath, [cli, 'status'], { encoding: 'utf8' });
  return Object.keys((JSON.parse(out) as { nodes: Record<string, unknown> }).nodes);
}

/** CRDs applied by hand before the chart existed are adopted by the release instead of failing the install. */
function adoptCrds(): void {
  for (const crd of [
    'replicatedvolumes.tandem.dev',
    'replicatedvolumereplicas.tandem.dev',
    'storagepools.tandem.dev',
  ]) {
    try {
      tool(bin.kubectl, ['get', 'crd', crd]);
    } catch {
      continue;
    }
    tool(bin.kubectl, ['label', '--overwrite', 'crd', crd, 'app.kubernetes.io/managed-by=Helm']);
    tool(bin.kubectl, [
      'annotate',
      '--overwrite',
      'crd',
      crd,
      `meta.helm.sh/release-name=${release.name}`,
      `meta.helm.sh/release-namespace=${release.namespace}`,
    ]);
  }
}

/**
 * A kubeconfig with a token of the ServiceAccount. With `node`, the token is bound to
 * that Node (as a pod's token names its node): the agent's admission policy lets it
 * act only for that node.
 */
function kubeconfigFor(serviceAccount: string, node?: string): string {
  const token = tool(bin.kubectl, [
    'create',
    'token',
    serviceAccount,
    '-n',
    release.namespace,
    '--duration=48h',
    ...(node ? ['--bound-object-kind', 'Node', '--bound-object-name', node] : []),
  ]).trim();
  const ca = join(state.pki, 'ca.crt');
  const path = join(deployDir, `${serviceAccount}${node ? `-${node}` : ''}.kubeconfig`);
  writeFileSync(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: local',
      '  cluster:',
      `    server: ${apiserverUrl}`,
      `    certificate-authority: ${ca}`,
      'users:',
      `- name: ${serviceAccount}`,
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: local',
      '  context:',
      '    cluster: local',
      `    user: ${serviceAccount}`,
      `    namespace: ${release.namespace}`,
      'current-context: local',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  return path;
}

function pidFile(name: string): string {
  return join(deployDir, `${name}.pid`);
}

/** SIGTERM (or SIGKILL) the process named in the pid file, if it is still ours. */
async function stopProcess(name: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const f = pidFile(name);
  if (!existsSync(f)) return;
  const pid = Number(readFileSync(f, 'utf8').trim());
  const alive = () => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('tandem-');
    } catch {
      return false;
    }
  };
  if (pid > 0 && alive()) {
    process.kill(pid, signal);
    for (let i = 0; i < 100 && alive(); i++) await sleep(100);
    if (alive()) process.kill(pid, 'SIGKILL');
  }
  rmSync(f, { force: true });
}

async function waitReady(url: string, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url, { signal: AbortSignal.timeout(1000) })).ok) return;
    } catch {
      /* not yet */
    }
    await sleep(200);
  }
  throw new Error(`${what} did not become ready at ${url} within ${timeoutMs} ms; see ${state.logs}`);
}

function launch(name: string, argv: string[], env: Record<string, string>): void {
  const out = openSync(join(state.logs, `tandem-${name}.log`), 'a');
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: repoRoot,
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, ...env, TANDEM_PID_FILE: pidFile(name) },
  });
  child.unref();
}

/** The controller, or a second one (`controller-2`, metrics on the next port) to show leader election. */
export async function startController(name = 'controller'): Promise<void> {
  const index = name === 'controller' ? 0 : Number(name.split('-')[1] ?? '2') - 1;
  const port = controllerMetricsPort + index;
  await stopProcess(name);
  launch(name, [process.execPath, join(repoRoot, 'bin/tandem-controller.js'), '--metrics-port', String(port)], {
    KUBECONFIG: join(deployDir, `${release.name}-controller.kubeconfig`),
    POD_NAMESPACE: release.namespace,
    POD_NAME: `tandem-${name}-local`,
  });
  await waitReady(`http://127.0.0.1:${port}/readyz`, `The ${name}`);
}

export function agentUrl(node: string, path = '/readyz'): string {
  const ip = JSON.parse(tool(bin.kubectl, ['get', 'node', node, '-o', 'json'])).status.addresses.find(
    (a: { type: string }) => a.type === 'InternalIP',
  ).address as string;
  return `http://${ip}:${agentMetricsPort}${path}`;
}

export async function startAgent(node: string): Promise<void> {
  await stopProcess(`agent-${node}`);
  launch(
    `agent-${node}`,
    [
      process.execPath,
      cli,
      'exec',
      node,
      '--',
      'env',
      `KUBECONFIG=${join(deployDir, `${release.name}-node-agent-${node}.kubeconfig`)}`,
      `TANDEM_PID_FILE=${pidFile(`agent-${node}`)}`,
      process.execPath,
      join(repoRoot, 'bin/tandem-node-agent.js'),
      '--node',
      node,
      '--metrics-port',
      String(agentMetricsPort),
    ],
    {},
  );
  await waitReady(agentUrl(node), `The agent on ${node}`);
}

/** Chart values that keep the chart's own pods away: the host processes stand in for them. */
const noPods = [
  '--set',
  'controller.replicas=0',
  '--set-string',
  'agent.nodeSelector.tandem\\.dev/no-node=true',
  '--set',
  'csi.enabled=false',
];

/** Pods of the release (from an install with the image) are gone before the host processes start. */
async function waitNoPods(): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const pods = tool(bin.kubectl, [
      'get',
      'pods',
      '-n',
      release.namespace,
      '-l',
      `app.kubernetes.io/instance=${release.name}`,
      '-o',
      'name',
    ]).trim();
    if (pods === '') return;
    if (Date.now() > deadline) throw new Error(`The chart's pods are still there after 120 s: ${pods}`);
    await sleep(500);
  }
}

export async function deploy(): Promise<void> {
  mkdirSync(deployDir, { recursive: true });
  mkdirSync(state.logs, { recursive: true });
  adoptCrds();
  const t0 = Date.now();
  tool(bin.helm, [
    'upgrade',
    '--install',
    release.name,
    join(repoRoot, 'helm/tandem'),
    '--namespace',
    release.namespace,
    '--create-namespace',
    '--reset-values',
    ...noPods,
  ]);
  log(`helm upgrade --install ${release.name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await waitNoPods();
  tool(bin.kubectl, [
    'wait',
    '--for=condition=Established',
    '--timeout=60s',
    'crd/replicatedvolumes.tandem.dev',
    'crd/replicatedvolumereplicas.tandem.dev',
    'crd/storagepools.tandem.dev',
  ]);
  // The administrator's part: the tutorial's disks granted to tandem on every node.
  tool(bin.kubectl, ['apply', '-f', join(repoRoot, 'examples/storage-pool.yaml')]);
  kubeconfigFor(`${release.name}-controller`);
  for (const node of nodes()) kubeconfigFor(`${release.name}-node-agent`, node);
  await startController();
  log(`Controller is ready (metrics http://127.0.0.1:${controllerMetricsPort}/metrics)`);
  for (const n of nodes()) {
    await startAgent(n);
    log(`Agent on ${n} is ready`);
  }
}

export async function undeploy(): Promise<void> {
  await stopProcess('controller');
  await stopProcess('controller-2');
  for (const n of nodes()) await stopProcess(`agent-${n}`);
}

export async function kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  await stopProcess(name, signal);
}

if (import.meta.main) {
  const [cmd = 'deploy', arg] = process.argv.slice(2);
  try {
    if (cmd === 'deploy') await deploy();
    else if (cmd === 'undeploy') await undeploy();
    else if (cmd === 'start-controller') await startController(arg);
    else if (cmd === 'start-agent' && arg) await startAgent(arg);
    else if (cmd === 'kill' && arg) await kill(arg);
    else if (cmd === 'stop' && arg) await kill(arg, 'SIGTERM');
    else
      throw new Error(
        'usage: cluster-deploy.ts [deploy|undeploy|start-controller [controller-2]|start-agent NODE|kill|stop controller|controller-2|agent-NODE]',
      );
    log(`${cmd} done`);
  } catch (err) {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  }
}
