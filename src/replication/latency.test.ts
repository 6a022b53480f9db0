import { describe, expect, it } from '@jest/globals';
import { LATENCY_BUCKETS, LatencyHistogram } from './latency.ts';

describe('LatencyHistogram', () => {
  it('counts each observation in its bucket and every larger one', () => {
    const h = new LatencyHistogram();
    h.observe(0.0001); // on the first bound: le=0.0001 includes it
    h.observe(0.0003);
    h.observe(0.2);
    h.observe(60); // beyond the last bound: only +Inf (count)
    const s = h.snapshot();
    expect(s.buckets).toBe(LATENCY_BUCKETS);
    expect(s.cumulative[0]).toBe(1);
    expect(s.cumulative[1]).toBe(1);
    expect(s.cumulative[2]).toBe(2); // le=0.0005
    expect(s.cumulative[LATENCY_BUCKETS.indexOf(0.25)]).toBe(3);
    expect(s.cumulative.at(-1)).toBe(3);
    expect(s.count).toBe(4);
    expect(s.sumSeconds).toBeCloseTo(60.2004, 6);
  });

  it('is cumulative and never decreasing', () => {
    const h = new LatencyHistogram();
    for (let i = 0; i < 200; i++) h.observe(i / 100);
    const c = h.snapshot().cumulative;
    for (let i = 1; i < c.length; i++) expect(c[i]!).toBeGreaterThanOrEqual(c[i - 1]!);
  });
});
