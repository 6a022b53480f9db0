import { initialState, transition, type EngineState } from './state.ts';

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
