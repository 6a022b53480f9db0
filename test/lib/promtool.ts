// What the chart's monitoring tests share: the real promtool (Debian's, unpacked by
// scripts/ensure-promtool.sh) and one of the chart's templates rendered by the real helm.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { bin, repoRoot } from '../e2e/harness/paths.ts';

const run = promisify(execFile);

/** promtool's path, unpacked on first use. */
export async function ensurePromtool(): Promise<string> {
  const built = await run('bash', [join(repoRoot, 'scripts/ensure-promtool.sh')], { maxBuffer: 16 << 20 });
  return built.stdout.trim().split('\n').at(-1)!;
}

/** `helm template` of one of helm/tandem's templates, with `--set` values. */
export async function renderChartTemplate(template: string, sets: readonly string[] = []): Promise<string> {
  if (!existsSync(bin.helm))
    throw new Error(`helm is not at ${bin.helm}: run scripts/e2e-setup.sh (or set TANDEM_HELM)`);
  const rendered = await run(bin.helm, [
    'template',
    'tandem',
    join(repoRoot, 'helm/tandem'),
    ...sets.flatMap((s) => ['--set', s]),
    '--show-only',
    `templates/${template}`,
  ]);
  return rendered.stdout;
}
