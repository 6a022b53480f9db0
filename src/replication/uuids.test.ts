import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import {
  compareUuids,
  finishSyncSource,
  finishSyncTarget,
  freshUuids,
  newCurrent,
  UUID_JUST_CREATED,
  type Uuids,
  type SyncDecision,
} from './uuids.ts';

const u = (current: bigint, bitmap = 0n, h0 = 0n, h1 = 0n): Uuids => ({ current, bitmap, history: [h0, h1] });
const MIRROR: Record<SyncDecision, SyncDecision> = {
  none: 'none',
  'bitmap-source': 'bitmap-target',
  'bitmap-target': 'bitmap-source',
  'full-source': 'full-target',
  'full-target': 'full-source',
  'split-brain': 'split-brain',
  'split-brain-unrelated': 'split-brain-unrelated',
  'unrelated-data': 'unrelated-data',
};

describe('compareUuids (DRBD uuid_compare)', () => {
  test.each<[string, Uuids, Uuids, SyncDecision]>([
    ['two new disks', freshUuids(), freshUuids(), 'none'],
    ['we are new', freshUuids(), u(0x1000n), 'full-target'],
    ['peer is new (tutorial: forced primary, then backup comes up)', u(0x1000n), freshUuids(), 'full-source'],
    ['same generation', u(0x1000n), u(0x1000n), 'none'],
    ['same generation, primary flag differs', u(0x1001n), u(0x1000n), 'none'],
    ['Primary wrote while the Secondary was away', u(0x2000n, 0x1000n), u(0x1000n), 'bitmap-source'],
    ['we were away', u(0x1000n), u(0x2000n, 0x1000n), 'bitmap-target'],
    ['tutorial §12: both promoted while cut off', u(0x2000n, 0x1000n), u(0x3000n, 0x1000n), 'split-brain'],
    ['peer lost its bitmap but has us in history', u(0x1000n), u(0x3000n, 0n, 0x1000n), 'full-target'],
    ['disks of different resources', u(0x1000n, 0x0500n), u(0x2000n, 0x0600n), 'unrelated-data'],
    [
      'diverged, common ancestor only in history',
      u(0x2000n, 0x1500n, 0x0700n),
      u(0x3000n, 0x1600n, 0x0700n),
      'split-brain-unrelated',
    ],
  ])('%s', (_n, self, peer, expected) => {
    expect(compareUuids(self, peer).decision).toBe(expected);
    expect(compareUuids(peer, self).decision).toBe(MIRROR[expected]);
  });

  test('is symmetric for any identifiers drawn from a small pool', () => {
    const pool = fc.constantFrom(0n, UUID_JUST_CREATED, 0x1000n, 0x1001n, 0x2000n, 0x3000n, 0x4000n);
    const arb = fc
      .tuple(pool, pool, pool, pool)
      .map(([c, b, h0, h1]) => u(c === 0n ? UUID_JUST_CREATED : c, b, h0, h1));
    fc.assert(
      fc.property(arb, arb, (a, b) => {
        expect(compareUuids(b, a).decision).toBe(MIRROR[compareUuids(a, b).decision]);
      }),
      { numRuns: 2000 },
    );
  });

  test('a disconnect, writes and a resync bring the pair back to the same generation', () => {
    const start = u(0x1000n);
    const primary = newCurrent(start, { bytes: (n) => randomBytes(n) });
    expect(primary.bitmap).toBe(0x1000n);
    expect(compareUuids(primary, start).decision).toBe('bitmap-source');
    const target = finishSyncTarget(start, primary);
    const source = finishSyncSource(primary);
    expect(compareUuids(source, target).decision).toBe('none');
    expect(source.bitmap).toBe(0n);
    expect(source.history[0]).toBe(0x1000n);
  });
});
