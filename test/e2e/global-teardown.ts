// jest globalTeardown for the e2e project: take down the local cluster if this
// run started it, unless TANDEM_E2E_KEEP=1 (then `npm run cluster:down` later).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './harness/paths.ts';

export default function globalTeardown(): void {
  if (process.env.TANDEM_E2E_STARTED_CLUSTER !== '1' || process.env.TANDEM_E2E_KEEP === '1') return;
  const r = spawnSync(process.execPath, [join(repoRoot, 'test/e2e/harness/cli.ts'), 'down'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (r.status !== 0) throw new Error(`cluster down failed (exit ${r.status})`);
}
