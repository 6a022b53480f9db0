// tandem-csi: the CSI driver, one process per role (Kubernetes' usual layout):
//
//   tandem-csi --mode controller --endpoint unix:///csi/csi.sock [--namespace tandem-system]
//   tandem-csi --mode node --endpoint unix:///csi/csi.sock [--node NAME] [--run-dir /run/tandem]
//              [--registration-dir /registration --kubelet-endpoint /var/lib/kubelet/plugins/tandem.dev/csi.sock]
//   tandem-csi --mode all …      both on one socket (csi-sanity, a single-node lab)
//   any mode: [--health-port N]  GET /healthz: the driver's own Probe over its socket (health.ts)
//
//   env: KUBECONFIG (else in-cluster), NODE_NAME, TANDEM_CSI_NAMESPACE, TANDEM_CSI_PROTO,
//        TANDEM_RUN_DIR, LOG_LEVEL, TANDEM_PID_FILE (for process supervisors outside Kubernetes)
//
// The controller keeps volumes as ReplicatedVolumes in --namespace; the node role
// needs no API access at all: it reads its engines' status on this node. With
// --registration-dir, the node role also registers itself with the kubelet
// (registration.ts: node-driver-registrar's job); --kubelet-endpoint is its csi.sock
// as the kubelet sees it.
import { readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { EngineClient } from '../node-agent/engine-client.ts';
import { ControllerService } from './controller-service.ts';
import { serveHealth } from './health.ts';
import { NodeService } from './node-service.ts';
import { defaultProtoPath, loadCsi, loadRegistration } from './proto.ts';
import { Registration } from './registration.ts';
import { serve } from './server.ts';
import { KubeVolumeStore } from './volume-store.ts';
import { shareConnections } from '../runtime/kube-config.ts';

function flag(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}

export async function main(argv: string[]): Promise<void> {
  const mode = flag(argv, '--mode', 'all');
  if (!['controller', 'node', 'all'].includes(mode)) throw new Error(`--mode ${mode}: controller, node or all`);
  const endpoint = flag(argv, '--endpoint', process.env.CSI_ENDPOINT ?? 'unix:///csi/csi.sock');
  const node = flag(argv, '--node', process.env.NODE_NAME ?? hostname());
  const namespace = flag(argv, '--namespace', process.env.TANDEM_CSI_NAMESPACE ?? 'tandem-system');
  const runDir = flag(argv, '--run-dir', process.env.TANDEM_RUN_DIR ?? '/run/tandem');
  const proto = flag(argv, '--csi-proto', process.env.TANDEM_CSI_PROTO ?? defaultProtoPath());
  const log = pino({ base: { component: 'csi', mode, node }, level: process.env.LOG_LEVEL ?? 'info' });
  const version = (
    JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  ).version;

  let controller: ControllerService | undefined;
  let ready: (() => Promise<boolean>) | undefined;
  if (mode !== 'node') {
    const kc = shareConnections(new k8s.KubeConfig());
    kc.loadFromDefault();
    const store = new KubeVolumeStore(kc, namespace);
    controller = new ControllerService({ store });
    ready = () =>
      store.listNodes().then(
        () => true,
        () => false,
      );
  }
  const nodeService =
    mode !== 'controller'
      ? new NodeService({ node, engines: new EngineClient({ runDir, node }), log: log.child({ service: 'node' }) })
      : undefined;
  const services = loadCsi(proto);
  const server = await serve(
    endpoint,
    services,
    {
      controller: controller as unknown as Record<string, (r: Record<string, unknown>) => Promise<unknown>> | undefined,
      node: nodeService as unknown as Record<string, (r: Record<string, unknown>) => Promise<unknown>> | undefined,
      ...(ready ? { ready } : {}),
      version,
    },
    log,
  );
  const registryDir = flag(argv, '--registration-dir', '');
  let registration: Registration | undefined;
  if (registryDir) {
    if (!nodeService) throw new Error('--registration-dir: only the node role registers with the kubelet');
    const kubeletEndpoint = flag(argv, '--kubelet-endpoint', '');
    if (!kubeletEndpoint)
      throw new Error('--registration-dir needs --kubelet-endpoint (csi.sock as the kubelet sees it)');
    registration = new Registration({ registryDir, kubeletEndpoint, service: loadRegistration(), log });
    await registration.start();
    log.info({ socket: registration.socket, kubeletEndpoint }, 'Waiting for the kubelet to register the driver');
  }
  const healthPort = Number(flag(argv, '--health-port', '0'));
  if (!Number.isInteger(healthPort) || healthPort < 0 || healthPort > 65535)
    throw new Error(`--health-port ${healthPort}: a TCP port, or 0 for none`);
  if (healthPort > 0) {
    await serveHealth(healthPort, services.Identity, endpoint, log);
    log.info({ port: healthPort }, 'Serving /healthz');
  }
  if (process.env.TANDEM_PID_FILE) writeFileSync(process.env.TANDEM_PID_FILE, `${process.pid}\n`);
  log.info({ endpoint, namespace, runDir }, 'Serving CSI');
  const stop = () => {
    void (registration?.stop() ?? Promise.resolve()).finally(() => server.tryShutdown(() => process.exit(0)));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
