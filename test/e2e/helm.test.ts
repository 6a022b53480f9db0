// helm against the fixture chart (test/e2e/fixtures/chart) until the operator's
// chart exists: lint (with the values schema), template, and the rendered
// manifests accepted by the real API server (server-side dry run).
import { join } from 'node:path';
import { repoRoot } from './harness/paths.ts';
import { helm, kubectl, useCluster } from './lib/cluster.ts';

const chart = join(repoRoot, 'test/e2e/fixtures/chart');
const cluster = useCluster();
const ns = cluster.namespacePerTest();

test('helm lint passes, and refuses values outside the chart schema', async () => {
  const ok = await helm(['lint', chart]);
  expect(ok.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
  await expect(helm(['lint', chart, '--set', 'protocol=D'])).rejects.toThrow(
    'protocol must be one of the following: "A", "B", "C"',
  );
});

test('helm template renders manifests the API server accepts', async () => {
  const rendered = await helm(['template', 'demo', chart, '--namespace', ns.name, '--set', 'primaryNode=backup']);
  expect(rendered.stdout).toContain('name: demo-settings');
  expect(rendered.stdout).toContain('primaryNode: "backup"');
  const applied = await kubectl(['apply', '--dry-run=server', '--namespace', ns.name, '-f', '-'], {
    input: rendered.stdout,
  });
  expect(applied.stdout).toContain('configmap/demo-settings created (server dry run)');
  expect(applied.stdout).toContain('serviceaccount/demo-agent created (server dry run)');
});
