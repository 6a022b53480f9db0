import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { SupervisedInformer } from './informer.ts';

// A small HTTP server that answers a Node list and a watch the way the API server does.
const managedFields = [
  {
    manager: 'kubelet',
    operation: 'Update',
    apiVersion: 'v1',
    fieldsType: 'FieldsV1',
    fieldsV1: { 'f:status': { 'f:conditions': { '.': {} } } },
  },
];
const node = (name: string, rv: string) => ({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name, resourceVersion: rv, labels: { zone: 'a' }, managedFields },
});

test('the cache and the callbacks get objects without managedFields', async () => {
  const watches: ServerResponse[] = [];
  const server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url?.includes('watch=true')) {
      watches.push(res);
      res.write(`${JSON.stringify({ type: 'MODIFIED', object: node('n1', '3') })}\n`);
      res.write(`${JSON.stringify({ type: 'ADDED', object: node('n2', '4') })}\n`);
      return;
    }
    res.end(
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'NodeList',
        metadata: { resourceVersion: '2' },
        items: [node('n1', '2')],
      }),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [
      { name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true },
    ],
    users: [{ name: 'u', token: 'x' }],
    contexts: [{ name: 'c', cluster: 'c', user: 'u' }],
    currentContext: 'c',
  });
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const seen: k8s.V1Node[] = [];
  const informer = new SupervisedInformer<k8s.V1Node>({
    kc,
    path: '/api/v1/nodes',
    list: () => core.listNode(),
    log: pino({ level: 'silent' }),
    onChange: (n) => seen.push(n),
  });
  try {
    await informer.start();
    for (let i = 0; i < 100 && informer.list().length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(informer.list().map((n) => [n.metadata?.name, n.metadata?.resourceVersion])).toEqual([
      ['n1', '3'],
      ['n2', '4'],
    ]);
    for (const n of [...informer.list(), ...seen]) {
      expect(n.metadata?.managedFields).toBeUndefined();
      expect(n.metadata?.labels).toEqual({ zone: 'a' });
    }
    expect(seen.map((n) => n.metadata?.resourceVersion)).toEqual(['2', '3', '4']);
  } finally {
    await informer.stop();
    for (const w of watches) w.end();
    server.closeAllConnections();
    server.close();
  }
});
