import { describe, expect, test } from '@jest/globals';
import type { EngineStatus } from '../replication/engine.ts';
import { LatencyHistogram } from '../replication/latency.ts';
import { progressBar, renderTop, topRows, type TopSample } from './top.ts';

function status(over: Partial<EngineStatus> = {}): EngineStatus {
  return {
    resource: 'db.mysql',
    minor: 0,
    node: 'master',
    peerNode: 'backup',
    role: 'Primary',
    peerRole: 'Secondary',
    cstate: 'Connected',
    disk: 'UpToDate',
    peerDisk: 'UpToDate',
    protocol: 'C',
    suspended: false,
    userPaused: false,
    peerPaused: false,
    size: 1 << 30,
    capacity: 1 << 30,
    counters: { ns: 0, nr: 0, dw: 0, dr: 0, al: 0, bm: 0, lo: 0, pe: 0, ua: 0, ap: 0, ep: 1 },
    oosBytes: 0,
    sync: undefined,
    uuids: { current: '0'.repeat(16), bitmap: '0'.repeat(16), history: ['0'.repeat(16), '0'.repeat(16)] },
    lastDecision: undefined,
    lastError: undefined,
    discardedBlocksSavedTo: undefined,
    transferLog: 0,
    writeLatency: new LatencyHistogram().snapshot(),
    ...over,
  };
}

const at = (ms: number, entries: [string, EngineStatus | { error: string }][]): TopSample => ({
  at: ms,
  statuses: new Map(entries),
});

describe('topRows', () => {
  test('throughput and latency are the change since the last refresh', () => {
    const h = new LatencyHistogram();
    h.observe(0.0002);
    const first = status({ writeLatency: h.snapshot() });
    for (let i = 0; i < 99; i++) h.observe(0.0004);
    h.observe(0.04);
    const second = status({
      counters: { ...first.counters, dw: 4 * 1024 * 1024, ns: 2 * 1024 * 1024, dr: 0 },
      writeLatency: h.snapshot(),
    });
    const [row] = topRows(at(3000, [['db.mysql', second]]), at(1000, [['db.mysql', first]]));
    expect(row!.writeBytesPerSecond).toBe(2 * 1024 * 1024);
    expect(row!.sentBytesPerSecond).toBe(1024 * 1024);
    expect(row!.writesPerSecond).toBe(50);
    expect(row!.writeLatencyAvg).toBeCloseTo((99 * 0.0004 + 0.04) / 100, 9);
    // 99 of the 100 new writes finished under 500 µs.
    expect(row!.writeLatencyP99).toBe(0.0005);
  });

  test('the first refresh has no rates; a dead engine is a row with its error; rows sort by name', () => {
    const rows = topRows(
      at(0, [
        ['z', status()],
        ['a', { error: 'not running' }],
      ]),
      undefined,
    );
    expect(rows.map((r) => r.resource)).toEqual(['a', 'z']);
    expect(rows[0]!.error).toBe('not running');
    expect(rows[1]!.writeBytesPerSecond).toBeUndefined();
    expect(rows[1]!.writeLatencyAvg).toBeUndefined();
  });

  test('frozen I/O, an unresolved split brain and a paused sync are flags', () => {
    const [row] = topRows(
      at(0, [
        [
          'r',
          status({
            cstate: 'StandAlone',
            suspended: true,
            userPaused: true,
            lastDecision: { decision: 'split-brain', rule: 'both were Primary' },
          }),
        ],
      ]),
      undefined,
    );
    expect(row!.flags).toEqual(['frozen', 'split-brain', 'paused']);
  });
});

describe('renderTop', () => {
  test('a syncing resource gets a progress bar line under its row', () => {
    const s = status({
      cstate: 'SyncSource',
      peerDisk: 'Inconsistent',
      oosBytes: 3 * 1024 * 1024,
      sync: {
        percent: 42.1,
        remainingBytes: 3 << 20,
        totalBytes: 5 << 20,
        etaSeconds: 65,
        speedKiBps: 8192,
        averageKiBps: 8000,
        paused: false,
      },
    });
    const lines = renderTop(topRows(at(0, [['db.mysql', s]]), undefined), {
      node: 'master',
      at: new Date('2026-12-07T01:02:03Z'),
      width: 200,
      interactive: true,
    });
    expect(lines[0]).toBe('tandem top - node master - 2026-12-07 01:02:03 UTC - 1 resource - q quits');
    expect(lines[2]).toMatch(/^RESOURCE +ROLE +CONN +DISK +OOS +WRITE/);
    expect(lines[3]).toMatch(/^db\.mysql +Primary\/Secondary +SyncSource +UpToDate\/Inconsistent +3\.0 MiB/);
    expect(lines[4]).toBe('  sync [========>...........] 42.1% 8.0 MiB/s eta 0:01:05');
  });

  test('lines are cut to the terminal width; an empty node says why', () => {
    const lines = renderTop([], { node: 'n', at: new Date(0), width: 30, interactive: false });
    expect(lines.every((l) => l.length <= 30)).toBe(true);
    expect(lines[0]).not.toContain('q quits');
    expect(lines[2]).toMatch(/^No engine runs/);
  });

  test('progressBar', () => {
    expect(progressBar(0, 10)).toBe('[>.........] 0.0%');
    expect(progressBar(55, 10)).toBe('[=====>....] 55.0%');
    expect(progressBar(100, 10)).toBe('[==========] 100.0%');
  });
});
