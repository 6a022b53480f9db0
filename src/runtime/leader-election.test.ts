import { mayAcquire } from './leader-election.ts';

const t0 = new Date('2026-11-25T12:00:00Z');
const at = (s: number) => new Date(t0.getTime() + s * 1000);

test.each([
  ['a free Lease', { holder: undefined, renewTime: undefined, durationSeconds: 15 }, 'a', 0, true],
  ['our own Lease', { holder: 'a', renewTime: t0, durationSeconds: 15 }, 'a', 1, true],
  ['a Lease another holder renewed recently', { holder: 'b', renewTime: t0, durationSeconds: 15 }, 'a', 14, false],
  ['a Lease at exactly its expiry', { holder: 'b', renewTime: t0, durationSeconds: 15 }, 'a', 15, false],
  ['an expired Lease', { holder: 'b', renewTime: t0, durationSeconds: 15 }, 'a', 16, true],
  ['a released Lease (empty holder)', { holder: '', renewTime: t0, durationSeconds: 1 }, 'a', 0, true],
] as const)('%s', (_what, lease, identity, seconds, expected) => {
  expect(mayAcquire(lease, identity, at(seconds))).toBe(expected);
});
