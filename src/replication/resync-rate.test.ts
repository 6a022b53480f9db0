import { DEFAULT_C_MIN_RATE, resyncRateNow } from './resync-rate.ts';

const M = 1024 * 1024;

describe('resyncRateNow', () => {
  test.each<[string, Parameters<typeof resyncRateNow>[0], boolean, number | undefined]>([
    ['defaults, idle application: unlimited', {}, false, undefined],
    ['defaults, busy application: the 64 MiB/s floor', {}, true, DEFAULT_C_MIN_RATE],
    ['fixed rate when the controller is off', { cPlanAhead: 0, resyncRate: 10 * M }, true, 10 * M],
    ['fixed mode without a rate: unlimited', { cPlanAhead: 0 }, true, undefined],
    ['resync-rate caps the dynamic controller', { resyncRate: 32 * M }, false, 32 * M],
    ['c-max-rate wins over resync-rate', { resyncRate: 32 * M, cMaxRate: 200 * M }, false, 200 * M],
    ['busy: c-min-rate, never above the cap', { cMinRate: 100 * M, cMaxRate: 50 * M }, true, 50 * M],
    ['c-min-rate 0 disables throttling', { cMinRate: 0 }, true, undefined],
  ])('%s', (_n, o, busy, expected) => {
    expect(resyncRateNow(o, busy)).toBe(expected);
  });
});
