import { describe, expect, test } from '@jest/globals';
import type { EngineStatusView } from './engine-client.ts';
import { agentMetrics, type VolumeSample } from './metrics.ts';

const engine = (over: Partial<EngineStatusView> = {}): EngineStatusView => ({
  resource: 'db.mysql',
  role: 'Primary',
  peerRole: 'Secondary',
  cstate: 'SyncSource',
  disk: 'UpToDate',
  peerDisk: 'Inconsistent',
  suspended: false,
  size: 1 << 30,
  counters: { ns: 8192, nr: 0, dw: 4096, dr: 12288, al: 3, bm: 1, lo: 0, pe: 2, ua: 0, ap: 1, ep: 1 },
  oosBytes: 65536,
  sync: { percent: 25, remainingBytes: 65536, totalBytes: 262144, speedKiBps: 2048 },
  uuids: { current: '0000000000000004' },
  startedAt: 1_700_000_000,
  writeLatency: { buckets: [0.001, 0.01], cumulative: [3, 5], sumSeconds: 0.02, count: 6 },
  ...over,
});

const sample = (volume: string, e: EngineStatusView | undefined): VolumeSample => ({
  namespace: 'db',
  volume,
  peer: 'backup',
  epoch: 7,
  engine: e,
});

const ID = 'namespace="db",volume="mysql",peer="backup"';

describe('agent metrics exposition', () => {
  test('every volume of the node has its own series, with namespace, volume, peer and node', async () => {
    const m = agentMetrics('master');
    m.observe('db/mysql-master', sample('mysql', engine()));
    m.observe('db/pg-master', sample('pg', engine({ cstate: 'WFConnection', peerDisk: 'DUnknown', sync: null })));
    const text = await m.registry.metrics();
    const lines = [
      `tandem_agent_volumes{node="master"} 2`,
      `tandem_engine_up{${ID},node="master"} 1`,
      `tandem_resource_role{${ID},role="Primary",node="master"} 1`,
      `tandem_peer_role{${ID},role="Secondary",node="master"} 1`,
      `tandem_connection_state{${ID},state="SyncSource",node="master"} 1`,
      `tandem_connection_state{namespace="db",volume="pg",peer="backup",state="WFConnection",node="master"} 1`,
      `tandem_disk_state{${ID},state="UpToDate",node="master"} 1`,
      `tandem_peerdevice_disk_state{${ID},state="Inconsistent",node="master"} 1`,
      `tandem_peerdevice_outofsync_bytes{${ID},node="master"} 65536`,
      `tandem_resync_progress_ratio{${ID},node="master"} 0.25`,
      `tandem_resync_remaining_bytes{${ID},node="master"} 65536`,
      `tandem_resync_rate_bytes_per_second{${ID},node="master"} 2097152`,
      `tandem_resync_rate_bytes_per_second{namespace="db",volume="pg",peer="backup",node="master"} 0`,
      `tandem_resource_epoch{${ID},node="master"} 7`,
      `tandem_device_io_suspended{${ID},node="master"} 0`,
      `tandem_resource_split_brain{${ID},node="master"} 0`,
      `tandem_engine_start_time_seconds{${ID},node="master"} 1700000000`,
      `tandem_device_written_bytes_total{${ID},node="master"} 4096`,
      `tandem_device_read_bytes_total{${ID},node="master"} 12288`,
      `tandem_peerdevice_sent_bytes_total{${ID},node="master"} 8192`,
      `tandem_peerdevice_received_bytes_total{${ID},node="master"} 0`,
      `tandem_peerdevice_pending{${ID},node="master"} 2`,
      `tandem_device_application_pending{${ID},node="master"} 1`,
      `tandem_device_write_latency_seconds_bucket{${ID},le="0.001",node="master"} 3`,
      `tandem_device_write_latency_seconds_bucket{${ID},le="0.01",node="master"} 5`,
      `tandem_device_write_latency_seconds_bucket{${ID},le="+Inf",node="master"} 6`,
      `tandem_device_write_latency_seconds_sum{${ID},node="master"} 0.02`,
      `tandem_device_write_latency_seconds_count{${ID},node="master"} 6`,
    ];
    const got = new Set(text.split('\n'));
    for (const l of lines) expect([l, got.has(l)]).toEqual([l, true]);
    expect(text).toContain('# TYPE tandem_device_written_bytes_total counter');
    expect(text).toContain('# TYPE tandem_device_write_latency_seconds histogram');
    expect(text).toContain('# TYPE tandem_connection_state gauge');
  });

  test("a state change replaces the old state's series; a replica that leaves takes all its series", async () => {
    const m = agentMetrics('master');
    m.observe('db/mysql-master', sample('mysql', engine()));
    m.observe('db/mysql-master', sample('mysql', engine({ cstate: 'Connected', peerDisk: 'UpToDate', sync: null })));
    let text = await m.registry.metrics();
    expect(text).toContain(`tandem_connection_state{${ID},state="Connected",node="master"} 1`);
    expect(text).not.toContain('state="SyncSource"');
    m.observe('db/mysql-master', undefined);
    text = await m.registry.metrics();
    expect(text).not.toContain('volume="mysql"');
    expect(text).toContain('tandem_agent_volumes{node="master"} 0');
  });

  test('no engine: only that it is not up, its role Unconfigured, and the epoch', async () => {
    const m = agentMetrics('master');
    m.observe('db/mysql-master', sample('mysql', undefined));
    const text = await m.registry.metrics();
    expect(text).toContain(`tandem_engine_up{${ID},node="master"} 0`);
    expect(text).toContain(`tandem_resource_role{${ID},role="Unconfigured",node="master"} 1`);
    expect(text).not.toContain('tandem_connection_state{');
  });

  test('an unresolved split brain and frozen I/O are 1', async () => {
    const m = agentMetrics('master');
    m.observe(
      'db/mysql-master',
      sample(
        'mysql',
        engine({
          cstate: 'StandAlone',
          suspended: true,
          lastDecision: { decision: 'split-brain', rule: 'both sides became Primary' },
        }),
      ),
    );
    const text = await m.registry.metrics();
    expect(text).toContain(`tandem_resource_split_brain{${ID},node="master"} 1`);
    expect(text).toContain(`tandem_device_io_suspended{${ID},node="master"} 1`);
  });

  test('cardinality is bounded: a state outside DRBD vocabulary is Unknown, not a new label value', async () => {
    const m = agentMetrics('master');
    m.observe('db/mysql-master', sample('mysql', engine({ cstate: 'Bogus-123', disk: 'Whatever', role: 'x' })));
    const text = await m.registry.metrics();
    expect(text).toContain(`tandem_connection_state{${ID},state="Unknown",node="master"} 1`);
    expect(text).toContain(`tandem_disk_state{${ID},state="Unknown",node="master"} 1`);
    expect(text).toContain(`tandem_resource_role{${ID},role="Unknown",node="master"} 1`);
    expect(text).not.toMatch(/Bogus|Whatever/);
  });

  test('the exposition parses: every sample line is NAME{LABELS} NUMBER of a family with HELP and TYPE', async () => {
    const m = agentMetrics('master');
    m.observe('db/mysql-master', sample('mysql', engine()));
    const text = await m.registry.metrics();
    const typed = new Set<string>();
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('# HELP')) continue;
      const t = /^# TYPE (\S+) (counter|gauge|histogram|summary)$/.exec(line);
      if (t) {
        typed.add(t[1]!);
        continue;
      }
      const s = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|[Nn]a[Nn]|\+Inf)$/.exec(line); // Go reads "Nan" (prom-client) too
      expect([line, s !== null]).toEqual([line, true]);
      const base = s![1]!.replace(/_(bucket|sum|count)$/, '');
      expect([line, typed.has(s![1]!) || typed.has(base)]).toEqual([line, true]);
    }
  });
});
