import { TOPOLOGY_KEY } from './identity.ts';
import { type CandidateNode, chooseReplicaNodes } from './placement.ts';

const node = (name: string, o: Partial<CandidateNode> = {}): CandidateNode => ({
  name,
  ready: true,
  unschedulable: false,
  hasInternalIP: true,
  poolDirectory: true,
  replicas: 0,
  ...o,
});
const topo = (...names: string[]) => names.map((n) => ({ segments: { [TOPOLOGY_KEY]: n } }));

describe('chooseReplicaNodes', () => {
  test.each([
    ['two usable nodes', [node('a'), node('b')], undefined, ['a', 'b']],
    [
      'the least loaded first',
      [node('a', { replicas: 3 }), node('b', { replicas: 1 }), node('c', { replicas: 2 })],
      undefined,
      ['b', 'c'],
    ],
    [
      'not Ready, cordoned, without an IP or a directory: skipped',
      [
        node('a', { ready: false }),
        node('b', { unschedulable: true }),
        node('c', { hasInternalIP: false }),
        node('d', { poolDirectory: false }),
        node('e'),
        node('f'),
      ],
      undefined,
      ['e', 'f'],
    ],
    [
      "preferred[0] (the pod's node) first",
      [node('a'), node('b'), node('c')],
      { requisite: topo('a', 'b', 'c'), preferred: topo('c', 'a') },
      ['c', 'a'],
    ],
    [
      'a node without room under the pool capacity is skipped; no capacity is no limit',
      [node('a', { roomBytes: 2 ** 30 - 1 }), node('b', { roomBytes: 2 ** 30 }), node('c', { replicas: 9 })],
      undefined,
      ['b', 'c'],
    ],
    [
      'one replica in the requisite, the other anywhere',
      [node('a'), node('b', { replicas: 5 })],
      { requisite: topo('b') },
      ['b', 'a'],
    ],
  ])('%s', (_what, nodes, req, want) => {
    expect(chooseReplicaNodes('p', nodes, req, 2 ** 30)).toEqual({ ok: true, nodes: want });
  });

  test.each([
    ['one usable node', [node('a'), node('b', { ready: false })], undefined, 'RESOURCE_EXHAUSTED', 'has 1 usable node'],
    [
      'one node with room for 1 GiB',
      [node('a', { roomBytes: 2 ** 30 }), node('b', { roomBytes: 2 ** 29 })],
      undefined,
      'RESOURCE_EXHAUSTED',
      'with room for 1.0 GiB under its capacity',
    ],
    [
      'requisite not usable',
      [node('a'), node('b'), node('c', { ready: false })],
      { requisite: topo('c') },
      'RESOURCE_EXHAUSTED',
      'no usable node among the requisite',
    ],
    [
      'a foreign topology key',
      [node('a'), node('b')],
      { requisite: [{ segments: { zone: 'x' } }] },
      'INVALID_ARGUMENT',
      "tandem's only segment",
    ],
  ])('%s', (_what, nodes, req, code, message) => {
    const got = chooseReplicaNodes('p', nodes, req, 2 ** 30);
    expect(got.ok).toBe(false);
    if (!got.ok) {
      expect(got.code).toBe(code);
      expect(got.message).toContain(message);
    }
  });
});
