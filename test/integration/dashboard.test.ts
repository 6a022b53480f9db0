// The chart's Grafana dashboard as it ships: rendered by the real helm from
// helm/tandem/templates/dashboard.yaml (default values), every panel's query checked by
// the real promtool (as recording rules: the same PromQL parser Prometheus runs). The e2e
// failover suite runs the same queries against a real Prometheus scraping the agents.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jest } from '@jest/globals';
import yaml from 'js-yaml';
import { repoRoot } from '../e2e/harness/paths.ts';
import { ensurePromtool, renderChartTemplate } from '../lib/promtool.ts';
import { dashboardQueries, type Dashboard } from '../lib/dashboard.ts';

jest.setTimeout(10 * 60_000);
const run = promisify(execFile);

let dir: string;
let promtool: string;
let shipped: Dashboard;
let configMap: { metadata: { labels: Record<string, string> }; data: Record<string, string> };

beforeAll(async () => {
  promtool = await ensurePromtool();
  configMap = yaml.load(await renderChartTemplate('dashboard.yaml')) as typeof configMap;
  shipped = JSON.parse(await readFile(join(repoRoot, 'helm/tandem/dashboards/tandem-volumes.json'), 'utf8'));
  dir = await mkdtemp(join(tmpdir(), 'tandem-dashboard-'));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the chart ships the dashboard by default, labelled for Grafana sidecars, byte for byte', () => {
  expect(configMap.metadata.labels.grafana_dashboard).toBe('1');
  expect(JSON.parse(configMap.data['tandem-volumes.json']!)).toEqual(shipped);
});

test('a fleet view and a volume view, every panel with a query', () => {
  const rows = shipped.panels.filter((p) => p.type === 'row').map((p) => p.title);
  expect(rows).toEqual(['Fleet: every volume', 'One volume: $namespace/$volume']);
  const panels = shipped.panels.filter((p) => p.type !== 'row');
  expect(panels.length).toBeGreaterThanOrEqual(15);
  for (const p of panels)
    expect({ panel: p.title, targets: (p.targets ?? []).length > 0 }).toEqual({ panel: p.title, targets: true });
});

test('promtool parses every query (variables substituted as Grafana would)', async () => {
  const queries = dashboardQueries(shipped, { namespace: 'shop', volume: 'db', rateInterval: '1m' });
  const rules = {
    groups: [{ name: 'dashboard', rules: queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: q.expr })) }],
  };
  await writeFile(join(dir, 'queries.yaml'), yaml.dump(rules));
  const { stdout } = await run(promtool, ['check', 'rules', join(dir, 'queries.yaml')]);
  expect(stdout).toContain(`SUCCESS: ${queries.length} rules found`);
});
