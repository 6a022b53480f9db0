// tandem-node-agent: the DaemonSet, one per node.
//
//   tandem-node-agent [--node NAME] [--run-dir /run/tandem] [--metrics-port 9942] [--host-root /mnt/tandem-host]
//                     [--engine-host /run/tandem/engine-host.sock] [--mount-root /mydata | /srv/tandem/{namespace}]
//                     [--no-node-identity] [--no-peer-tls]
//   env: NODE_NAME (downward API), KUBECONFIG (else in-cluster), TANDEM_RUN_DIR, TANDEM_ENGINE_HOST,
//        POD_NAMESPACE (the operator's namespace, where peer Secrets live; default tandem-system)
//
// SIGTERM stops the agent, never the engines: they keep serving I/O, and the
// next agent re-attaches to them through their control sockets.
import { writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { DEFAULT_OPERATOR_NAMESPACE, KINDS, LABELS } from '../api/names.ts';
import { startHealthServer } from '../runtime/http.ts';
import { SupervisedInformer } from '../runtime/informer.ts';
import { collectionPath, listCustom } from '../runtime/kube.ts';
import { NodeAgent } from './agent.ts';
import { KubeAgentApi } from './agent-api.ts';
import { FileConfigStore } from './config-store.ts';
import { Consumer } from './consumer.ts';
import { EngineHostClient } from '../engine-host/client.ts';
import { EngineClient } from './engine-client.ts';
import { DEFAULT_MOUNT_ROOT } from './mount-path.ts';
import { serveFenceRequests } from './fence.ts';
import { agentMetrics } from './metrics.ts';
import { fenceHandlerCommand } from './render-config.ts';
import { shareConnections } from '../runtime/kube-config.ts';

const FENCE_SCRIPT = fileURLToPath(new URL('../../bin/tandem-fence-peer.js', import.meta.url));

function flag(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}

export async function main(argv: string[]): Promise<void> {
  const node = flag(argv, '--node', process.env.NODE_NAME ?? hostname());
  const runDir = flag(argv, '--run-dir', process.env.TANDEM_RUN_DIR ?? '/run/tandem');
  // Where spec.mountPath may point (mount-path.ts); `{namespace}` gives each namespace its own tree.
  const mountRoot = flag(argv, '--mount-root', process.env.TANDEM_MOUNT_ROOT ?? DEFAULT_MOUNT_ROOT);
  const log = pino({ base: { component: 'node-agent', node }, level: process.env.LOG_LEVEL ?? 'info' });
  await mkdir(runDir, { recursive: true });
  // For process supervisors outside Kubernetes (npm run cluster:deploy).
  if (process.env.TANDEM_PID_FILE) writeFileSync(process.env.TANDEM_PID_FILE, `${process.pid}\n`);
  const kc = shareConnections(new k8s.KubeConfig());
  kc.loadFromDefault();
  const metrics = agentMetrics(node);
  // --engine-host SOCKET (the chart): engines start in the engine host's pod and outlive this one.
  const engineHost = flag(argv, '--engine-host', process.env.TANDEM_ENGINE_HOST ?? '');
  const engines = new EngineClient({
    runDir,
    node,
    ...(engineHost ? { engineHost: new EngineHostClient(engineHost) } : {}),
  });
  const fenceSocket = join(runDir, 'agent.sock');
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const selector = `${LABELS.node}=${node}`;
  const agent = new NodeAgent({
    node,
    log,
    api: new KubeAgentApi(kc, node, {
      operatorNamespace: process.env.POD_NAMESPACE ?? DEFAULT_OPERATOR_NAMESPACE,
      // Secrets are read as this node's own ServiceAccount (issue 15 item 4); the chart
      // passes --no-node-identity only where its admission policy is off (Kubernetes < 1.30).
      nodeIdentity: !argv.includes('--no-node-identity'),
    }),
    engines,
    config: new FileConfigStore(engines, fenceHandlerCommand(process.execPath, FENCE_SCRIPT, fenceSocket)),
    consumer: new Consumer({ hostRoot: flag(argv, '--host-root', ''), mountRoot }),
    mountRoot,
    // Peer links run over TLS with the certificate the controller issued to this node.
    peerTls: !argv.includes('--no-peer-tls'),
    observe: (key, sample) => metrics.observe(key, sample),
    replicas: (handlers) =>
      new SupervisedInformer<k8s.KubernetesObject>({
        kc,
        log,
        path: collectionPath(KINDS.replica.plural),
        labelSelector: selector,
        list: listCustom(custom, KINDS.replica.plural, selector),
        ...handlers,
      }),
  });
  const server = await startHealthServer({
    port: Number(flag(argv, '--metrics-port', '9942')),
    registry: metrics.registry,
    ready: () => agent.synced,
  });
  const fenceServer = await serveFenceRequests(fenceSocket, (res, action) => agent.handle(res, action), log);
  let stopping = false;
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'Shutting down; engines keep running');
    await agent.stop();
    await new Promise<void>((r) => fenceServer.close(() => r()));
    await server.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  await agent.start();
  log.info({ runDir, port: server.port, engineHost: engineHost || undefined }, 'Agent started');
}
