import { nodeSecretNames, staleNodeAccess, type VolumeOnNodes } from './node-access.ts';

test.each<[string, string, Parameters<typeof nodeSecretNames>[1], string[]]>([
  ['no volumes: only the node TLS Secret (never an empty list)', 'master', [], ['tls.master']],
  [
    'only volumes with a replica on the node',
    'master',
    [
      { namespace: 'a', name: 'db', nodes: ['master', 'backup'] },
      { namespace: 'b', name: 'web', nodes: ['n2', 'n3'] },
      { namespace: 'c', name: 'logs', nodes: ['n3', 'master'] },
    ],
    ['peer.a.db', 'peer.c.logs', 'tls.master'],
  ],
  [
    'a deleted volume (its finalizer gone) no longer counts',
    'backup',
    [
      { namespace: 'a', name: 'db', nodes: ['master', 'backup'], gone: true },
      { namespace: 'a', name: 'db2', nodes: ['master', 'backup'] },
    ],
    ['peer.a.db2', 'tls.backup'],
  ],
  [
    'the same name in two namespaces is two Secrets',
    'n1',
    [
      { namespace: 'a', name: 'db', nodes: ['n1', 'n2'] },
      { namespace: 'b', name: 'db', nodes: ['n1', 'n2'] },
    ],
    ['peer.a.db', 'peer.b.db', 'tls.n1'],
  ],
])('nodeSecretNames: %s', (_what, node, volumes, names) => {
  expect(nodeSecretNames(node, volumes)).toEqual(names);
});

describe('staleNodeAccess: a node that is gone and holds nothing loses its access objects', () => {
  const vol = (name: string, nodes: string[], gone = false): VolumeOnNodes => ({ namespace: 'ns', name, nodes, gone });
  test.each<[string, string[], string[], VolumeOnNodes[], string[]]>([
    ['a live node keeps them', ['a', 'b'], ['a', 'b'], [], []],
    ['a gone node with no volume', ['a', 'gone'], ['a'], [vol('x', ['a', 'b'])], ['gone']],
    ['a gone node that still holds a replica keeps them', ['gone'], [], [vol('x', ['a', 'gone'])], []],
    [
      'even a volume being deleted holds them (its engines must still stop)',
      ['gone'],
      [],
      [vol('x', ['gone'], true)],
      [],
    ],
    ['each node once, sorted', ['z', 'y', 'z'], [], [], ['y', 'z']],
  ])('%s', (_what, withAccess, live, volumes, want) => {
    expect(staleNodeAccess(withAccess, new Set(live), volumes)).toEqual(want);
  });
});
