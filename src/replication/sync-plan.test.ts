import fc from 'fast-check';
import type { Params } from './messages.ts';
import { mirrorDecision, planConnect, type ConnectPlan, type PlanContext } from './sync-plan.ts';

const ctx: PlanContext = {
  policy: { afterSb0pri: 'disconnect', afterSb1pri: 'disconnect', afterSb2pri: 'disconnect' },
  keepsDiscarded: true,
};

const A = '1000000000000000';
const B = '2000000000000000';
const C = '3000000000000000';
const D = '4000000000000000';
const Z = '0000000000000000';
const NEW = '0000000000000004';

function params(node: string, o: Partial<Params> = {}): Params {
  return {
    reply: false,
    protocol: 'C',
    capacity: 64 << 20,
    laSize: 64 << 20,
    uuids: { current: A, bitmap: Z, history: [Z, Z] },
    disk: 'UpToDate',
    role: 'Secondary',
    allowTwoPrimaries: false,
    discardMyData: false,
    crashedPrimary: false,
    cacheLost: false,
    node,
    changes: 0,
    primaryAtSplit: false,
    invalidate: 'none',
    resize: false,
    ...o,
  };
}

const summary = (p: ConnectPlan): string =>
  p.kind === 'sync' ? `${p.decision} ${p.role}${p.splitBrain ? ` sb:${p.splitBrain.victim}` : ''}` : p.kind;

describe('planConnect: how a pair connects', () => {
  test.each<[string, Partial<Params>, Partial<Params>, string, RegExp | null]>([
    ['same generation', {}, {}, 'none none', null],
    [
      'two new disks',
      { uuids: { current: NEW, bitmap: Z, history: [Z, Z] } },
      { uuids: { current: NEW, bitmap: Z, history: [Z, Z] } },
      'none none',
      null,
    ],
    [
      'the peer is new: full sync from here',
      {},
      { uuids: { current: NEW, bitmap: Z, history: [Z, Z] }, disk: 'Inconsistent' },
      'full-source source',
      null,
    ],
    [
      'we wrote while apart (our bitmap generation is the peer current)',
      { uuids: { current: B, bitmap: A, history: [Z, Z] }, role: 'Primary' },
      {},
      'bitmap-source source',
      null,
    ],
    [
      'the peer wrote while apart',
      {},
      { uuids: { current: B, bitmap: A, history: [Z, Z] } },
      'bitmap-target target',
      null,
    ],
    [
      'both started a new generation from the same one: split brain, refused by default',
      { uuids: { current: B, bitmap: A, history: [Z, Z] }, changes: 3 },
      { uuids: { current: C, bitmap: A, history: [Z, Z] }, changes: 2 },
      'refuse',
      /Split-Brain detected but unresolved/,
    ],
    [
      'split brain, we discard our data',
      { uuids: { current: B, bitmap: A, history: [Z, Z] }, discardMyData: true },
      { uuids: { current: C, bitmap: A, history: [Z, Z] } },
      'bitmap-target target sb:self',
      null,
    ],
    [
      'split brain, both want to discard: refused',
      { uuids: { current: B, bitmap: A, history: [Z, Z] }, discardMyData: true },
      { uuids: { current: C, bitmap: A, history: [Z, Z] }, discardMyData: true },
      'refuse',
      /both sides want to discard/,
    ],
    [
      'crossed history: a split brain only a full sync repairs',
      { uuids: { current: B, bitmap: Z, history: [C, Z] }, discardMyData: true },
      { uuids: { current: C, bitmap: Z, history: [B, Z] } },
      'full-target target sb:self',
      null,
    ],
    [
      'no generation in common: refused',
      {},
      { uuids: { current: D, bitmap: Z, history: [Z, Z] } },
      'refuse',
      /Unrelated data/,
    ],
    [
      'a crashed Primary that kept its page cache resyncs its activity log to the peer (DRBD rule 40)',
      { crashedPrimary: true },
      {},
      'bitmap-source source',
      null,
    ],
    [
      'a crashed Primary whose machine restarted gets its activity log back from the peer that kept its cache',
      { crashedPrimary: true, cacheLost: true },
      {},
      'bitmap-target target',
      null,
    ],
    [
      'a crashed Primary is the source when the peer lost its cache instead',
      { crashedPrimary: true },
      { cacheLost: true },
      'bitmap-source source',
      null,
    ],
    [
      'both lost their cache: the crashed Primary is the source',
      { crashedPrimary: true, cacheLost: true },
      { cacheLost: true },
      'bitmap-source source',
      null,
    ],
    [
      'a crashed Primary whose peer is Inconsistent is the source',
      { crashedPrimary: true, cacheLost: true },
      { disk: 'Inconsistent' },
      'bitmap-source source',
      null,
    ],
    [
      'both crashed while Primary: the lower name is the source',
      { crashedPrimary: true },
      { crashedPrimary: true },
      'bitmap-source source',
      null,
    ],
    ['an interrupted resync resumes', { disk: 'Inconsistent' }, {}, 'bitmap-target target', null],
    ['blocks marked by verify: the Primary wins', { changes: 2 }, { role: 'Primary' }, 'bitmap-target target', null],
    [
      'blocks out of sync, our machine restarted (lost its cache): the peer is the source, whatever the names',
      { changes: 2, cacheLost: true },
      {},
      'bitmap-target target',
      null,
    ],
    ['invalidate', { invalidate: 'self' }, {}, 'full-target target', null],
    ['invalidate-remote on the peer', {}, { invalidate: 'peer' }, 'full-target target', null],
    [
      'two Primaries without allow-two-primaries',
      { role: 'Primary' },
      { role: 'Primary' },
      'refuse',
      /both nodes are Primary/,
    ],
    [
      'a Primary that would become SyncTarget refuses',
      { role: 'Primary' },
      { uuids: { current: B, bitmap: A, history: [Z, Z] } },
      'refuse',
      /I shall become SyncTarget, but I am primary/,
    ],
    ['protocols differ', { protocol: 'A' }, {}, 'refuse', /incompatible communication protocols/],
    ['no disk here: refused', { disk: 'Diskless' }, {}, 'refuse', /no local disk/],
    ['no disk on the peer: this side keeps trying', {}, { disk: 'Diskless' }, 'retry', /the peer has no disk/],
    ['the peer disk is too small', {}, { capacity: 32 << 20 }, 'refuse', /disk size is too small/],
  ])('%s', (_name, mine, peer, want, reason) => {
    const plan = planConnect(params('alpha', mine), params('beta', peer), ctx);
    expect(summary(plan)).toBe(want);
    if (reason) expect(plan.kind !== 'sync' && plan.reason).toMatch(reason);
  });

  test('a resize grows to the smaller disk and syncs the new area from the Primary', () => {
    const plan = planConnect(
      params('alpha', { role: 'Primary', capacity: 128 << 20, resize: true }),
      params('beta', { capacity: 96 << 20 }),
      ctx,
    );
    expect(plan).toMatchObject({ kind: 'sync', role: 'source', size: 96 << 20, grownFrom: 64 << 20 });
  });

  test('after-sb-0pri discard-least-changes picks the side with fewer changes', () => {
    const policy = { ...ctx, policy: { ...ctx.policy, afterSb0pri: 'discard-least-changes' as const } };
    const plan = planConnect(
      params('alpha', { uuids: { current: B, bitmap: A, history: [Z, Z] }, changes: 1 }),
      params('beta', { uuids: { current: C, bitmap: A, history: [Z, Z] }, changes: 5 }),
      policy,
    );
    expect(plan).toMatchObject({ kind: 'sync', role: 'target', splitBrain: { victim: 'self', by: 'after-sb policy' } });
  });

  test('a split-brain victim keeps a copy of what it overwrites, unless discarded-data-dir is none', () => {
    const mine = params('alpha', {
      uuids: { current: B, bitmap: A, history: [Z, Z] },
      discardMyData: true,
      changes: 2,
    });
    const peer = params('beta', { uuids: { current: C, bitmap: A, history: [Z, Z] } });
    expect(planConnect(mine, peer, ctx)).toMatchObject({ saveDiscarded: true });
    expect(planConnect(mine, peer, { ...ctx, keepsDiscarded: false })).toMatchObject({ saveDiscarded: false });
  });
});

// Both sides plan alone from the same two PARAMS: their plans must mirror each other.
const uuid = fc.constantFrom(A, B, C, D, NEW, Z);
const arbParams = (node: string): fc.Arbitrary<Params> =>
  fc.record({
    reply: fc.boolean(),
    protocol: fc.constantFrom('C' as const, 'C' as const, 'A' as const),
    capacity: fc.constantFrom(64 << 20, 96 << 20),
    laSize: fc.constantFrom(0, 64 << 20),
    uuids: fc.record({ current: uuid, bitmap: uuid, history: fc.tuple(uuid, uuid) }),
    disk: fc.constantFrom(
      'UpToDate' as const,
      'Consistent' as const,
      'Outdated' as const,
      'Inconsistent' as const,
      'Diskless' as const,
    ),
    role: fc.constantFrom('Primary' as const, 'Secondary' as const),
    allowTwoPrimaries: fc.boolean(),
    discardMyData: fc.boolean(),
    crashedPrimary: fc.boolean(),
    cacheLost: fc.boolean(),
    node: fc.constant(node),
    changes: fc.nat(3),
    primaryAtSplit: fc.boolean(),
    invalidate: fc.constantFrom('none' as const, 'none' as const, 'self' as const, 'peer' as const),
    resize: fc.boolean(),
  });
const policies = fc.record({
  afterSb0pri: fc.constantFrom(
    'disconnect' as const,
    'discard-zero-changes' as const,
    'discard-least-changes' as const,
    'discard-younger-primary' as const,
    'discard-node-alpha' as const,
  ),
  afterSb1pri: fc.constantFrom(
    'disconnect' as const,
    'consensus' as const,
    'discard-secondary' as const,
    'violently-as0p' as const,
  ),
  afterSb2pri: fc.constantFrom('disconnect' as const, 'violently-as0p' as const),
});

test('the two sides always reach mirrored plans (fast-check)', () => {
  fc.assert(
    fc.property(arbParams('alpha'), arbParams('beta'), policies, (a, b, policy) => {
      const c = { policy, keepsDiscarded: true };
      const pa = planConnect(a, b, c);
      const pb = planConnect(b, a, c);
      expect(pa.kind === 'sync').toBe(pb.kind === 'sync');
      if (pa.kind !== 'sync' || pb.kind !== 'sync') return;
      expect(pb.decision).toBe(mirrorDecision(pa.decision));
      expect(pb.size).toBe(pa.size);
      expect(pb.role).toBe(pa.role === 'source' ? 'target' : pa.role === 'target' ? 'source' : 'none');
      expect(pb.splitBrain?.victim).toBe(
        pa.splitBrain === undefined ? undefined : pa.splitBrain.victim === 'self' ? 'peer' : 'self',
      );
      if (pa.role === 'none') expect([pb.disk, pb.peerDisk]).toEqual([pa.peerDisk, pa.disk]);
    }),
    { numRuns: 5000 },
  );
});
