// Certificates made with node:crypto alone: parsed by Node (OpenSSL underneath), accepted
// by a real TLS 1.3 handshake with mutual authentication, and checked as the peer link
// checks them (peer-link.ts checkPeerCertificate).
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { checkPeerCertificate, loadTls } from '../replication/peer-link.ts';
import { issueCa, issueNodeCert } from './x509.ts';

const ca = issueCa('tandem peer CA test');
const master = issueNodeCert(ca, 'master');
const backup = issueNodeCert(ca, 'backup');

test('the CA is a self-signed CA; a node certificate is signed by it and names the node', () => {
  const c = new X509Certificate(ca.certPem);
  expect(c.ca).toBe(true);
  expect(c.subject).toBe('CN=tandem peer CA test');
  expect(c.verify(c.publicKey)).toBe(true);
  const m = new X509Certificate(master.certPem);
  expect(m.ca).toBe(false);
  expect(m.subject).toBe('CN=master');
  expect(m.issuer).toBe(c.subject);
  expect(m.subjectAltName).toBe('DNS:master');
  expect(m.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
  expect(m.checkIssued(c)).toBe(true);
  expect(m.verify(c.publicKey)).toBe(true);
  expect(m.checkPrivateKey(createPrivateKey(master.keyPem))).toBe(true);
  expect(Date.parse(m.validTo) - Date.now()).toBeGreaterThan(800 * 86_400_000);
  expect(m.serialNumber).not.toBe(new X509Certificate(backup.certPem).serialNumber);
});

test('a node name that could smuggle anything into a name is refused', () => {
  for (const bad of ['', 'a b', 'a,CN=evil', '../x', 'ä'])
    expect(() => issueNodeCert(ca, bad)).toThrow('not a node name');
});

test('dates from 2050 are GeneralizedTime (RFC 5280) and parse', () => {
  const late = issueNodeCert(ca, 'n', { now: new Date('2049-12-01T00:00:00Z'), days: 60 });
  expect(new Date(new X509Certificate(late.certPem).validTo).getUTCFullYear()).toBe(2050);
});

describe('a real TLS 1.3 handshake, both sides checked as the peer link does', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tandem-x509-'));
    const other = issueCa('another CA');
    const mallory = issueNodeCert(other, 'backup');
    const files: Record<string, string> = {
      'ca.crt': ca.certPem,
      'master.crt': master.certPem,
      'master.key': master.keyPem,
      'backup.crt': backup.certPem,
      'backup.key': backup.keyPem,
      'other.crt': other.certPem,
      'mallory.crt': mallory.certPem,
      'mallory.key': mallory.keyPem,
    };
    for (const [f, text] of Object.entries(files)) await writeFile(join(dir, f), text, { mode: 0o600 });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Server `master`, client as `as`; what each side's checkPeerCertificate says. */
  async function handshake(as: 'backup' | 'mallory'): Promise<{ server?: string; client?: string }> {
    const mine = loadTls({ ca: join(dir, 'ca.crt'), cert: join(dir, 'master.crt'), key: join(dir, 'master.key') });
    const theirs = loadTls({
      ca: join(dir, 'ca.crt'),
      cert: join(dir, as === 'backup' ? 'backup.crt' : 'mallory.crt'),
      key: join(dir, as === 'backup' ? 'backup.key' : 'mallory.key'),
    });
    const out: { server?: string; client?: string } = {};
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const serverDone = new Promise<void>((resolve) => {
      server.once('connection', (raw) => {
        const t = new tls.TLSSocket(raw, {
          isServer: true,
          secureContext: mine.context,
          requestCert: true,
          rejectUnauthorized: false,
        });
        t.once('secure', () => {
          out.server = checkPeerCertificate(t, mine.ca, 'backup') ?? 'ok';
          expect(t.getProtocol()).toBe('TLSv1.3');
          t.destroy();
          resolve();
        });
        t.once('error', () => resolve());
      });
    });
    const c = tls.connect({
      host: '127.0.0.1',
      port,
      secureContext: theirs.context,
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    await new Promise<void>((resolve) => {
      c.once('secureConnect', () => {
        out.client = checkPeerCertificate(c, theirs.ca, 'master') ?? 'ok';
        resolve();
      });
      c.once('error', () => resolve());
    });
    await serverDone;
    c.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    return out;
  }

  test('two nodes of one CA: TLS 1.3, each accepts the other', async () => {
    expect(await handshake('backup')).toEqual({ server: 'ok', client: 'ok' });
  });

  test("a certificate of another CA naming the peer is refused by the peer link's check", async () => {
    const r = await handshake('mallory');
    expect(r.server).toContain('not signed by tls-ca');
  });
});
