// jest globalSetup for the e2e project: make sure the binaries are in the cache
// (scripts/e2e-setup.sh: a cold build the first time, well under a second after)
// and the local cluster is up, once for the whole run. Nothing to do against an
// external cluster (TANDEM_E2E_EXTERNAL=1).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './harness/paths.ts';

function step(what: string, cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], cwd: repoRoot });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status})`);
}

export default function globalSetup(): void {
  if (process.env.TANDEM_E2E_EXTERNAL === '1') return;
  const cli = join(repoRoot, 'test/e2e/harness/cli.ts');
  step('scripts/e2e-setup.sh', 'bash', [join(repoRoot, 'scripts/e2e-setup.sh')]);
  const wasUp = spawnSync(process.execPath, [cli, 'status'], { stdio: 'ignore' }).status === 0;
  step('cluster up', process.execPath, [cli, 'up']);
  // Read by global-teardown.ts in this same process: only a cluster this run started is taken down.
  process.env.TANDEM_E2E_STARTED_CLUSTER = wasUp ? '0' : '1';
}
