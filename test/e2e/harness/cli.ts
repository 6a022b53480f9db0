// The local cluster's command line (npm run cluster:*):
//   up [--nodes N]                 start etcd, kube-apiserver, kube-controller-manager, nodes
//   down                           stop everything, remove what up made
//   exec NODE [--] CMD [ARGS...]   run a command inside a node's namespaces
//   node stop|start|partition|heal NODE
//   restart-apiserver              stop and start kube-apiserver (etcd and nodes stay)
//   status                         what runs, node by node
import { spawnSync } from 'node:child_process';
import { down, isUp, nodeAction, restartApiserver, up } from './cluster.ts';
import type { NodeAction } from './cluster.ts';
import { assertRunnable, nsenterArgs, readState } from './nodes.ts';
import { state } from './paths.ts';

const usage = `usage:
  npm run cluster:up [-- --nodes N]
  npm run cluster:down
  npm run cluster:exec -- NODE -- CMD [ARGS...]
  npm run cluster:node -- stop|start|partition|heal NODE
  node test/e2e/harness/cli.ts restart-apiserver|status`;

const log = (msg: string) => console.error(`[cluster] ${msg}`);

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'up': {
      const i = rest.indexOf('--nodes');
      const nodeCount = i >= 0 ? Number(rest[i + 1]) : undefined;
      if (nodeCount !== undefined && !(Number.isInteger(nodeCount) && nodeCount >= 1 && nodeCount <= 9))
        throw new Error('--nodes takes 1..9');
      const t0 = Date.now();
      await up({ nodeCount, log });
      log(`Ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      console.log(`export KUBECONFIG=${state.kubeconfig}`);
      return 0;
    }
    case 'down':
      await down();
      log('Cluster is down');
      return 0;
    case 'exec': {
      const [node, ...cmd] = rest;
      if (cmd[0] === '--') cmd.shift();
      if (!node || cmd.length === 0) throw new Error(usage);
      assertRunnable(node);
      const r = spawnSync('nsenter', [...nsenterArgs(node, process.cwd()), ...cmd], { stdio: 'inherit' });
      if (r.error) throw r.error;
      return r.status ?? 1;
    }
    case 'node': {
      const [action, node] = rest;
      if (!node || !['stop', 'start', 'partition', 'heal'].includes(action ?? '')) throw new Error(usage);
      await nodeAction(action as NodeAction, node);
      log(`Node ${node}: ${action} done`);
      return 0;
    }
    case 'restart-apiserver':
      await restartApiserver();
      log('kube-apiserver restarted');
      return 0;
    case 'status': {
      const upNow = await isUp().catch(() => false);
      console.log(
        JSON.stringify({ apiserverReady: upNow, kubeconfig: state.kubeconfig, nodes: readState().nodes }, null, 2),
      );
      return upNow ? 0 : 1;
    }
    default:
      console.error(usage);
      return 2;
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
}
