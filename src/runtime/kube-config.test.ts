import { once } from 'node:events';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { issueCa, issueNodeCert } from '../net/x509.ts';
import { shareConnections } from './kube-config.ts';

// A real HTTPS server that asks for client certificates, as the API server does, and
// counts the TLS connections made to it.
const ca = issueCa('test-ca');
const serverCert = issueNodeCert(ca, 'apiserver');
let server: Server;
let port: number;
let connections = 0;

beforeAll(async () => {
  server = createServer(
    { key: serverCert.keyPem, cert: serverCert.certPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      const name = req.url?.split('/').pop() ?? '';
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'default' } }));
    },
  );
  server.on('secureConnection', () => connections++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server.closeAllConnections();
  server.close();
  await once(server, 'close');
});

beforeEach(() => {
  connections = 0;
});

function kubeConfig(user: { certPem: string; keyPem: string }): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  kc.loadFromOptions({
    clusters: [
      {
        name: 'test',
        server: `https://127.0.0.1:${port}`,
        caData: b64(ca.certPem),
        tlsServerName: 'apiserver',
        skipTLSVerify: false,
      },
    ],
    users: [{ name: 'controller', certData: b64(user.certPem), keyData: b64(user.keyPem) }],
    contexts: [{ name: 'test', cluster: 'test', user: 'controller' }],
    currentContext: 'test',
  });
  return kc;
}

async function readConfigMaps(kc: k8s.KubeConfig, n: number): Promise<void> {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  for (let i = 0; i < n; i++) {
    const cm = await core.readNamespacedConfigMap({ name: `cm-${i}`, namespace: 'default' });
    expect(cm.metadata?.name).toBe(`cm-${i}`);
  }
}

test('client-node alone opens a TLS connection per API call (why shareConnections exists)', async () => {
  // If this starts failing after an upgrade, client-node pools by itself: drop kube-config.ts.
  await readConfigMaps(kubeConfig(issueNodeCert(ca, 'controller')), 20);
  expect(connections).toBe(20);
});

test('with shareConnections, sequential API calls reuse their connections', async () => {
  await readConfigMaps(shareConnections(kubeConfig(issueNodeCert(ca, 'controller'))), 20);
  // One or two: undici may open a second while the first response's end is in flight.
  expect(connections).toBeLessThanOrEqual(2);
});

test('a new client certificate gets a new dispatcher, and the old one is closed', async () => {
  const kc = shareConnections(kubeConfig(issueNodeCert(ca, 'controller')));
  const dispatcherOf = async () => {
    const ctx = new k8s.RequestContext(`https://127.0.0.1:${port}/api/v1/namespaces`, k8s.HttpMethod.GET);
    await kc.applySecurityAuthentication(ctx);
    return ctx.getDispatcher();
  };
  const first = await dispatcherOf();
  expect(first).toBeDefined();
  expect(await dispatcherOf()).toBe(first);
  await readConfigMaps(kc, 10);
  const before = connections;
  expect(before).toBeLessThanOrEqual(2);

  // Rotated: the user's certificate and key change (as a re-read certFile would).
  const rotated = issueNodeCert(ca, 'controller');
  const user = kc.getCurrentUser() as { certData?: string; keyData?: string };
  user.certData = Buffer.from(rotated.certPem).toString('base64');
  user.keyData = Buffer.from(rotated.keyPem).toString('base64');
  const second = await dispatcherOf();
  expect(second).not.toBe(first);
  // undici's dispatchers have `closed` (DispatcherBase), its Dispatcher type does not.
  expect((first as { closed?: boolean } | undefined)?.closed).toBe(true);
  await readConfigMaps(kc, 10);
  expect(connections - before).toBeGreaterThanOrEqual(1);
  expect(connections - before).toBeLessThanOrEqual(2);
});
