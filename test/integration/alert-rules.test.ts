// The chart's alert rules as they ship: rendered by the real helm from
// helm/tandem/templates/prometheus-rule.yaml (default values), checked and tested by
// the real promtool (Debian's, unpacked by scripts/ensure-promtool.sh)
// against test/promtool/alerts.test.yaml. Also: every alert links a runbook section
// that exists in docs/how-to/alerts.md.
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jest } from '@jest/globals';
import yaml from 'js-yaml';
import { repoRoot } from '../e2e/harness/paths.ts';
import { ensurePromtool, renderChartTemplate } from '../lib/promtool.ts';

// A cold promtool build takes minutes; a warm one is instant.
jest.setTimeout(30 * 60_000);

const run = promisify(execFile);

type Rule = { alert?: string; annotations?: Record<string, string> };
type RuleDoc = { kind: string; spec: { groups: { name: string; rules: Rule[] }[] } };

let dir: string;
let promtool: string;
let rules: RuleDoc;

beforeAll(async () => {
  promtool = await ensurePromtool();
  const rendered = await renderChartTemplate('prometheus-rule.yaml', ['metrics.prometheusRule.enabled=true']);
  rules = yaml.load(rendered) as RuleDoc;
  dir = await mkdtemp(join(tmpdir(), 'tandem-alerts-'));
  // A PrometheusRule's spec is a Prometheus rule file.
  await writeFile(join(dir, 'rules.yaml'), yaml.dump(rules.spec));
  await copyFile(join(repoRoot, 'test/promtool/alerts.test.yaml'), join(dir, 'alerts.test.yaml'));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the rendered PrometheusRule passes promtool check rules', async () => {
  expect(rules.kind).toBe('PrometheusRule');
  const { stdout } = await run(promtool, ['check', 'rules', join(dir, 'rules.yaml')]);
  expect(stdout).toMatch(/SUCCESS: 7 rules found/);
});

test('promtool test rules: each alert fires when it should, and only then', async () => {
  const r = await run(promtool, ['test', 'rules', join(dir, 'alerts.test.yaml')]).catch(
    (err: { stdout?: string; stderr?: string }) => {
      throw new Error(`promtool test rules failed:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    },
  );
  expect(r.stdout).toContain('SUCCESS');
  // Every alert of the chart has at least one test case.
  const tested = new Set(
    [...(await readFile(join(dir, 'alerts.test.yaml'), 'utf8')).matchAll(/alertname: (\w+)/g)].map((m) => m[1]),
  );
  const alerts = rules.spec.groups.flatMap((g) => g.rules.map((x) => x.alert));
  expect(alerts.filter((a) => !tested.has(a))).toEqual([]);
});

test("every alert's runbook_url names a section of docs/how-to/alerts.md", async () => {
  const doc = await readFile(join(repoRoot, 'docs/how-to/alerts.md'), 'utf8');
  // GitHub's anchors: a heading lower-cased, spaces to dashes.
  const anchors = new Set(
    [...doc.matchAll(/^#+ (.+)$/gm)].map((m) =>
      m[1]!
        .toLowerCase()
        .replace(/[^a-z0-9 -]/g, '')
        .replace(/ /g, '-'),
    ),
  );
  for (const g of rules.spec.groups)
    for (const r of g.rules) {
      const url = r.annotations?.runbook_url ?? '';
      expect([r.alert, url.split('#')[1] !== undefined && anchors.has(url.split('#')[1]!)]).toEqual([r.alert, true]);
    }
});
