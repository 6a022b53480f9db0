import { type FileClaim, fileClaimOf, fileClaimsOf, poolUsed } from './storage-pool.ts';

const c = (key: string, bytes: number, created: string, placed: boolean): FileClaim => ({
  key,
  pool: 'p',
  nodes: ['n1'],
  bytes,
  created,
  placed,
});

describe('poolUsed', () => {
  const claims = [
    c('a/placed', 5, '2026-12-07T09:00:00.000Z', true),
    c('a/old', 3, '2026-12-07T07:00:00.000Z', false),
    c('a/too-big', 9, '2026-12-07T07:30:00.000Z', false),
    c('a/new', 2, '2026-12-07T10:00:00.000Z', false),
  ];
  test('placed first, then unplaced in creation order while they fit', () => {
    expect(poolUsed(claims, 'p', 'n1', 10)).toBe(10); // 5 + 3, too-big skipped, + 2
    expect(poolUsed(claims, 'p', 'n1', 10, { key: 'x/me', created: '2026-12-07T08:00:00.000Z' })).toBe(8);
    expect(poolUsed(claims, 'p', 'n1', 10, { key: 'a/old', created: '2026-12-07T07:00:00.000Z' })).toBe(5);
  });
  test('other nodes and pools do not count', () => {
    expect(poolUsed(claims, 'p', 'n2', 10)).toBe(0);
    expect(poolUsed(claims, 'q', 'n1', 10)).toBe(0);
  });
});

describe('fileClaimOf', () => {
  const v = {
    metadata: { namespace: 'shop', name: 'db', creationTimestamp: '2026-12-07T08:00:00Z' },
    spec: { pool: 'p', size: '1Gi', replicas: [{ node: 'a' }, { node: 'b', disk: '/dev/sdb1' }] },
    status: { conditions: [{ type: 'Placed', status: 'True' }] },
  };
  test('the file-backed nodes, the size in bytes, one spelling of the time', () => {
    expect(fileClaimOf(v)).toEqual({
      key: 'shop/db',
      pool: 'p',
      nodes: ['a'],
      bytes: 2 ** 30,
      created: '2026-12-07T08:00:00.000Z',
      placed: true,
    });
  });
  test('a Date (as the client gives it) and a string spelling of the same time compare equal', () => {
    const asDate = { ...v, metadata: { ...v.metadata, creationTimestamp: new Date('2026-12-07T08:00:00Z') } };
    expect(fileClaimOf(asDate)?.created).toBe(fileClaimOf(v)?.created);
    expect(fileClaimsOf([v, { ...v, spec: { ...v.spec, size: undefined } }])).toHaveLength(1);
  });
  test('no file-backed replica, or no size: no claim', () => {
    expect(fileClaimOf({ ...v, spec: { ...v.spec, replicas: [{ node: 'a', disk: '/dev/x' }] } })).toBeUndefined();
    expect(fileClaimOf({ ...v, spec: { ...v.spec, size: undefined } })).toBeUndefined();
  });
  test('not Placed yet', () => {
    expect(fileClaimOf({ ...v, status: { conditions: [{ type: 'Placed', status: 'False' }] } })?.placed).toBe(false);
    expect(fileClaimOf({ ...v, status: undefined })?.placed).toBe(false);
  });
});
