// A user-written tandem.dev/port annotation never moves a volume onto another's port or off the range.
import { type PortClaim, portsInUse, trustedPort } from './port.ts';

const range = { first: 7789, count: 1000 };
const v = (key: string, created: string, annotation?: string, statusPort?: number): PortClaim => ({
  key,
  created,
  annotation,
  statusPort,
});
const a = v('a/vol', '2026-01-01T00:00:00Z', '7789', 7789);

test.each<[string, PortClaim, PortClaim[], number | undefined]>([
  ['the controller recorded the port in status', v('b/v', '2026-02-01T00:00:00Z', '7790', 7790), [a], 7790],
  ['status wins over an edited annotation', v('b/v', '2026-02-01T00:00:00Z', '7789', 7790), [a], 7790],
  ['a new volume with the annotation the controller wrote', v('b/v', '2026-02-01T00:00:00Z', '7790'), [a], 7790],
  ["a pre-set annotation naming another volume's port", v('b/v', '2026-02-01T00:00:00Z', '7789'), [a], undefined],
  ['a pre-set annotation outside the range (sshd)', v('b/v', '2026-02-01T00:00:00Z', '22'), [a], undefined],
  ['a pre-set annotation that is not a number', v('b/v', '2026-02-01T00:00:00Z', '7790abc'), [a], undefined],
  ['a pre-set annotation past the range', v('b/v', '2026-02-01T00:00:00Z', '8789'), [a], undefined],
  [
    'two new volumes with one annotation: the older keeps it',
    v('b/v', '2026-02-01T00:00:00Z', '7800'),
    [v('c/v', '2026-01-15T00:00:00Z', '7800')],
    undefined,
  ],
  [
    'two new volumes with one annotation: the newer does not take it from the older',
    v('c/v', '2026-01-15T00:00:00Z', '7800'),
    [v('b/v', '2026-02-01T00:00:00Z', '7800')],
    7800,
  ],
  ['no annotation, no status', v('b/v', '2026-02-01T00:00:00Z'), [a], undefined],
])('%s', (_what, me, others, want) => {
  expect(trustedPort(me, [...others, me], range)).toBe(want);
});

test('a new allocation avoids every port in a status or an annotation', () => {
  expect([...portsInUse([a, v('b/v', 'x', '7795'), v('c/v', 'y', undefined, 7801)])].sort()).toEqual([
    7789, 7795, 7801,
  ]);
});
