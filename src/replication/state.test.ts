import { effectsOf, initialState, transition, type EngineState } from './state.ts';
import type { FencingPolicy } from '../api/config.ts';

const ctx = { allowTwoPrimaries: false, openCount: 0 };
const connected: EngineState = {
  ...initialState(),
  conn: 'Connected',
  disk: 'UpToDate',
  peerDisk: 'UpToDate',
  peerRole: 'Secondary',
};

describe('transition', () => {
  test.each<[string, EngineState, Partial<EngineState>, typeof ctx, RegExp | string]>([
    ['promote an UpToDate Secondary', connected, { role: 'Primary' }, ctx, 'role(Secondary->Primary)'],
    [
      'refuse promotion without UpToDate data',
      { ...connected, disk: 'Inconsistent' },
      { role: 'Primary' },
      ctx,
      /\(-2\) Need access to UpToDate data/,
    ],
    [
      'refuse a second Primary',
      { ...connected, peerRole: 'Primary' },
      { role: 'Primary' },
      ctx,
      /\(-1\) Multiple primaries not allowed by config/,
    ],
    [
      'allow a second Primary with allow-two-primaries',
      { ...connected, peerRole: 'Primary' },
      { role: 'Primary' },
      { ...ctx, allowTwoPrimaries: true },
      'role(Secondary->Primary)',
    ],
    [
      'refuse to promote a SyncTarget',
      { ...connected, conn: 'SyncTarget', disk: 'UpToDate' },
      { role: 'Primary' },
      ctx,
      /\(-16\)/,
    ],
    [
      'refuse to demote while held open',
      { ...connected, role: 'Primary' },
      { role: 'Secondary' },
      { ...ctx, openCount: 1 },
      /\(-12\) Device is held open by someone/,
    ],
    [
      'losing the link makes the peer Unknown',
      { ...connected, role: 'Primary' },
      { conn: 'NetworkFailure' },
      ctx,
      'peer(Secondary->Unknown) conn(Connected->NetworkFailure) pdsk(UpToDate->DUnknown)',
    ],
  ])('%s', (_name, from, change, c, expected) => {
    const r = transition(from, change, c);
    if (typeof expected === 'string') {
      expect(r.ok).toBe(true);
      if (r.ok) expect(r.diff).toBe(expected);
    } else {
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.error.message).toMatch(expected);
        expect(r.error.code).toBe('TANDEM_ERR_STATE_CHANGE');
      }
    }
  });
});

describe('effects of a state change', () => {
  const primary: EngineState = { ...connected, role: 'Primary' };
  const cases: [string, EngineState, Partial<EngineState>, string, string[]][] = [
    ['a Primary loses its UpToDate peer', primary, { conn: 'NetworkFailure' }, 'dont-care', ['new-generation']],
    [
      'with fencing, it also fences (and freezes with resource-and-stonith)',
      primary,
      { conn: 'NetworkFailure' },
      'resource-and-stonith',
      ['new-generation', 'fence-peer:freeze'],
    ],
    [
      'a Primary loses its SyncTarget (the target may have finished without telling)',
      { ...primary, conn: 'SyncSource', peerDisk: 'Inconsistent' },
      { conn: 'BrokenPipe' },
      'resource-only',
      ['new-generation', 'fence-peer'],
    ],
    ['a Secondary loses its peer: nothing', connected, { conn: 'NetworkFailure' }, 'resource-and-stonith', []],
    [
      'a Secondary loses its Primary, which had no disk of its own: it now holds the only copy',
      { ...connected, peerRole: 'Primary', peerDisk: 'Diskless' },
      { conn: 'NetworkFailure' },
      'dont-care',
      [],
    ],
    [
      'a Primary whose own disk failed loses the peer: no copy left',
      { ...primary, disk: 'Diskless' },
      { conn: 'NetworkFailure' },
      'dont-care',
      ['pri-on-incon-degr'],
    ],
    [
      'the pair becomes whole: unfence',
      { ...primary, conn: 'SyncSource', peerDisk: 'Inconsistent' },
      { conn: 'Connected', peerDisk: 'UpToDate' },
      'resource-only',
      ['unfence-peer'],
    ],
    [
      'a resync starting is no new generation',
      { ...primary, conn: 'WFBitMapS', peerDisk: 'Inconsistent' },
      { conn: 'SyncSource' },
      'dont-care',
      [],
    ],
  ];
  test.each(cases)('%s', (_name, from, change, fencing, expected) => {
    const r = transition(from, change, ctx);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const got = effectsOf(from, r.next, fencing as FencingPolicy).map((e) =>
      e.kind === 'fence-peer' && e.freeze ? 'fence-peer:freeze' : e.kind,
    );
    expect(got).toEqual(expected);
  });
});
