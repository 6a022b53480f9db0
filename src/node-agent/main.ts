// tandem-node-agent: the DaemonSet, one per node.
//
//   tandem-node-agent [--node NAME] [--run-dir /run/tandem] [--metrics-port 9942] [--host-root /mnt/tandem-host]
//   env: NODE_NAME (downward API), KUBECONFIG (else in-cluster), TANDEM_RUN_DIR
//
// SIGTERM stops the agent, never the engines: they keep serving I/O, and the
// next agent re-attaches to them through their control sockets.
import { writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { startHealthServer } from '../controller/runtime/http.ts';
import { NodeAgent } from './agent.ts';
import { agentMetrics } from './metrics.ts';

function flag(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}

export async function main(argv: string[]): Promise<void> {
  const node = flag(argv, '--node', process.env.NODE_NAME ?? hostname());
  const runDir = flag(argv, '--run-dir', process.env.TANDEM_RUN_DIR ?? '/run/tandem');
  const log = pino({ base: { component: 'node-agent', node }, level: process.env.LOG_LEVEL ?? 'info' });
  await mkdir(runDir, { recursive: true });
  // For process supervisors outside Kubernetes (npm run cluster:deploy).
  if (process.env.TANDEM_PID_FILE) writeFileSync(process.env.TANDEM_PID_FILE, `${process.pid}\n`);
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  const metrics = agentMetrics(node);
  const agent = new NodeAgent({ kc, node, runDir, log, metrics, hostRoot: flag(argv, '--host-root', '') });
  const server = await startHealthServer({
    port: Number(flag(argv, '--metrics-port', '9942')),
    registry: metrics.registry,
    ready: () => agent.synced,
  });
  let stopping = false;
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'Shutting down; engines keep running');
    await agent.stop();
    await server.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  await agent.start();
  log.info({ runDir, port: server.port }, 'Agent started');
}
