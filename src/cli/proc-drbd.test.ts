import { formatProcDrbd, progressLines } from './proc-drbd.ts';
import type { EngineStatus } from '../replication/engine.ts';
import { LatencyHistogram } from '../replication/latency.ts';

const base: EngineStatus = {
  resource: 'mysql',
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
  size: 7 * 1024 ** 3,
  capacity: 7 * 1024 ** 3,
  counters: {
    ns: 6850687 * 1024,
    nr: 2050 * 1024,
    dw: 16829 * 1024,
    dr: 6845699 * 1024,
    al: 15,
    bm: 0,
    lo: 0,
    pe: 0,
    ua: 0,
    ap: 0,
    ep: 1,
  },
  oosBytes: 0,
  sync: undefined,
  uuids: { current: '0'.repeat(16), bitmap: '0'.repeat(16), history: ['0'.repeat(16), '0'.repeat(16)] },
  lastDecision: undefined,
  lastError: undefined,
  discardedBlocksSavedTo: undefined,
  transferLog: 0,
  writeLatency: new LatencyHistogram().snapshot(),
};

describe('formatProcDrbd', () => {
  test("renders the tutorial's Connected line and counters exactly", () => {
    expect(formatProcDrbd(base)).toBe(
      ' 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n' +
        '    ns:6850687 nr:2050 dw:16829 dr:6845699 al:15 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0',
    );
  });

  test("renders the tutorial's sync progress lines", () => {
    const total = 6672 * 1024 * 1024 * 1.0;
    const lines = progressLines({
      percent: 55.1,
      remainingBytes: 3004 * 1024 * 1024,
      totalBytes: total,
      etaSeconds: 353,
      speedKiBps: 8696,
      averageKiBps: 9180,
      paused: false,
    });
    expect(lines[0]).toBe("\t[==========>.........] sync'ed: 55.1% (3004/6672)M");
    expect(lines[1]).toBe('\tfinish: 0:05:53 speed: 8,696 (9,180) K/sec');
  });

  test('shows MiB above 4 GiB and a paused user sync flag', () => {
    const s = {
      ...base,
      cstate: 'PausedSyncS' as const,
      userPaused: true,
      peerDisk: 'Inconsistent' as const,
      sync: {
        percent: 0,
        remainingBytes: 5 * 1024 ** 3,
        totalBytes: 5 * 1024 ** 3,
        etaSeconds: undefined,
        speedKiBps: 0,
        averageKiBps: 0,
        paused: true,
      },
    };
    const out = formatProcDrbd(s).split('\n');
    expect(out[0]).toBe(' 0: cs:PausedSyncS ro:Primary/Secondary ds:UpToDate/Inconsistent C r--u--');
    expect(out[2]).toBe("\t[>...................] sync'ed:  0.0% (5120/5120)M");
    expect(out[3]).toContain('finish: ?:??:??');
  });
});
