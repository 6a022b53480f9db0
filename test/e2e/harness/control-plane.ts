// etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes.
//
// Flags follow controller-runtime's envtest for etcd and the API server (one
// member, no fsync, a service CIDR nobody routes), plus what envtest leaves out
// because we want it: RBAC with the Node authorizer and NodeRestriction (node
// heartbeats authenticate as system:node:NAME, as kubelets do), service-account
// tokens, and a kube-controller-manager whose node lifecycle controller runs on
// seconds instead of 50 s.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ensureClient, ensureServerPki, pkiFile } from './certs.ts';
import { KubeHttp, credentialsFromKubeconfig } from './kube-http.ts';
import { apiserverUrl, bin, net, ports, repoRoot, state, timing } from './paths.ts';
import { daemonPid, logTail, startDaemon, stopDaemon, waitFor } from './proc.ts';

const etcdUrl = `http://127.0.0.1:${ports.etcdClient}`;
const kcmKubeconfig = () => join(state.pki, 'kube-controller-manager.kubeconfig');
const schedulerKubeconfig = () => join(state.pki, 'kube-scheduler.kubeconfig');
// The API server's client certificate towards kubelets (logs, exec, port-forward).
const kubeletClient = {
  name: 'apiserver-kubelet-client',
  cn: 'kube-apiserver-kubelet-client',
  groups: ['system:masters'],
};

/** Runs scripts/e2e-setup.sh (a cold build: minutes) when a binary is missing from the cache. */
export function ensureBinaries(): void {
  const missing = () => Object.values(bin).filter((p) => !existsSync(p));
  if (missing().length === 0) return;
  const r = spawnSync('bash', [join(repoRoot, 'scripts/e2e-setup.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0 || missing().length > 0) {
    throw new Error(`scripts/e2e-setup.sh failed (exit ${r.status}); still missing: ${missing().join(', ')}`);
  }
}

async function healthy(http: KubeHttp, path: string): Promise<boolean> {
  try {
    const r = await http.request('GET', path, { timeoutMs: 2000 });
    return r.status === 200;
  } catch {
    return false;
  }
}

async function etcdHealthy(): Promise<boolean> {
  try {
    const r = await fetch(`${etcdUrl}/health`, { signal: AbortSignal.timeout(2000) });
    return r.ok && ((await r.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}

export async function startEtcd(): Promise<void> {
  if (daemonPid('etcd') !== undefined && (await etcdHealthy())) return;
  await stopDaemon('etcd');
  mkdirSync(state.etcdData, { recursive: true, mode: 0o700 });
  const peer = `http://127.0.0.1:${ports.etcdPeer}`;
  startDaemon('etcd', bin.etcd, [
    '--name=tandem-e2e',
    `--data-dir=${state.etcdData}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=tandem-e2e=${peer}`,
    '--unsafe-no-fsync=true',
    '--log-level=warn',
  ]);
  await waitFor('etcd /health', etcdHealthy, 30_000, () => logTail('etcd'));
}

function apiserverArgs(): string[] {
  return [
    `--advertise-address=${net.hostIp}`,
    `--bind-address=${net.hostIp}`,
    `--secure-port=${ports.apiserver}`,
    `--etcd-servers=${etcdUrl}`,
    `--tls-cert-file=${pkiFile.cert('apiserver')}`,
    `--tls-private-key-file=${pkiFile.key('apiserver')}`,
    `--client-ca-file=${pkiFile.ca()}`,
    `--service-account-issuer=https://kubernetes.default.svc.cluster.local`,
    `--service-account-key-file=${pkiFile.saPub()}`,
    `--service-account-signing-key-file=${pkiFile.saKey()}`,
    `--service-cluster-ip-range=${net.serviceCidr}`,
    '--authorization-mode=Node,RBAC',
    '--enable-admission-plugins=NodeRestriction',
    '--allow-privileged=true',
    `--kubelet-client-certificate=${pkiFile.cert(kubeletClient.name)}`,
    `--kubelet-client-key=${pkiFile.key(kubeletClient.name)}`,
    '--kubelet-preferred-address-types=InternalIP',
    // Close watches on SIGTERM instead of letting them hold the HTTP server open for a minute.
    '--shutdown-watch-termination-grace-period=2s',
    '--profiling=false',
    '--v=1',
  ];
}

/** An admin client for the harness itself; the caller closes it. */
export function adminHttp(): KubeHttp {
  return new KubeHttp(credentialsFromKubeconfig(state.kubeconfig));
}

export async function apiserverReady(http: KubeHttp): Promise<boolean> {
  return healthy(http, '/readyz');
}

export async function startApiserver(): Promise<void> {
  ensureServerPki();
  ensureClient({ name: 'admin', cn: 'tandem-admin', groups: ['system:masters'] }, state.kubeconfig);
  ensureClient(kubeletClient, join(state.pki, `${kubeletClient.name}.kubeconfig`));
  const http = adminHttp();
  try {
    if (daemonPid('kube-apiserver') !== undefined && (await apiserverReady(http))) return;
    await stopDaemon('kube-apiserver');
    startDaemon('kube-apiserver', bin.kubeApiserver, apiserverArgs());
    await waitFor(
      `kube-apiserver ${apiserverUrl}/readyz`,
      async () => {
        if (daemonPid('kube-apiserver') === undefined)
          throw new Error(`kube-apiserver exited:\n${logTail('kube-apiserver')}`);
        return apiserverReady(http);
      },
      90_000,
      () => logTail('kube-apiserver'),
    );
  } finally {
    http.close();
  }
}

/** Stops and starts kube-apiserver with the same flags; etcd and everything else stay. */
export async function restartApiserver(): Promise<void> {
  await stopDaemon('kube-apiserver', 15_000);
  await startApiserver();
}

export async function startControllerManager(): Promise<void> {
  if (daemonPid('kube-controller-manager') !== undefined) return;
  ensureClient({ name: 'kube-controller-manager', cn: 'system:kube-controller-manager' }, kcmKubeconfig());
  startDaemon('kube-controller-manager', bin.kubeControllerManager, [
    `--kubeconfig=${kcmKubeconfig()}`,
    // No serving endpoint: nothing scrapes it, and it would need its own certs and a port.
    '--secure-port=0',
    '--leader-elect=false',
    '--use-service-account-credentials=true',
    `--service-account-private-key-file=${pkiFile.saKey()}`,
    `--root-ca-file=${pkiFile.ca()}`,
    `--cluster-signing-cert-file=${pkiFile.ca()}`,
    `--cluster-signing-key-file=${join(state.pki, 'ca.key')}`,
    `--node-monitor-period=${timing.nodeMonitorPeriodSeconds}s`,
    `--node-monitor-grace-period=${timing.nodeMonitorGraceSeconds}s`,
    '--node-startup-grace-period=20s',
    '--controllers=*',
    '--v=1',
  ]);
  const http = adminHttp();
  try {
    // The token controller's first act: every namespace gets its default ServiceAccount.
    await waitFor(
      'kube-controller-manager (default ServiceAccount in namespace default)',
      async () => {
        if (daemonPid('kube-controller-manager') === undefined)
          throw new Error(`kube-controller-manager exited:\n${logTail('kube-controller-manager')}`);
        try {
          return (await http.request('GET', '/api/v1/namespaces/default/serviceaccounts/default')).status === 200;
        } catch {
          return false;
        }
      },
      60_000,
      () => logTail('kube-controller-manager'),
    );
  } finally {
    http.close();
  }
}

/** Places pods on nodes: without it the DaemonSet's and Deployment's pods stay Pending. */
export async function startScheduler(): Promise<void> {
  if (daemonPid('kube-scheduler') !== undefined) return;
  ensureClient({ name: 'kube-scheduler', cn: 'system:kube-scheduler' }, schedulerKubeconfig());
  startDaemon('kube-scheduler', bin.kubeScheduler, [
    `--kubeconfig=${schedulerKubeconfig()}`,
    `--authentication-kubeconfig=${schedulerKubeconfig()}`,
    `--authorization-kubeconfig=${schedulerKubeconfig()}`,
    '--leader-elect=false',
    // Its health endpoint on loopback only; nothing else serves from it.
    '--bind-address=127.0.0.1',
    '--secure-port=10259',
    '--v=1',
  ]);
}

export async function stopControlPlane(): Promise<void> {
  await stopDaemon('kube-scheduler');
  await stopDaemon('kube-controller-manager');
  await stopDaemon('kube-apiserver', 15_000);
  await stopDaemon('etcd');
}
