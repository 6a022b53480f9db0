// Issue 15 item 5b: the peer link over TLS 1.3 with mutual authentication. Certificates from
// `tandemadm tls-certs`; real engines; a pair that connects and replicates, and the refusals:
// a certificate from another CA, a certificate of the same CA naming another node, and a
// plaintext peer (or client) at a TLS port.
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jest } from '@jest/globals';
import { NODE, Pair, TANDEMADM, tool } from './support/pair.ts';

jest.setTimeout(180_000);
const run = promisify(execFile);

let certs: string;
beforeAll(async () => {
  certs = await mkdtemp(join(tmpdir(), 'tandem-tls-'));
  await run(NODE, [TANDEMADM, 'tls-certs', join(certs, 'good'), 'master', 'backup', 'intruder']);
  await run(NODE, [TANDEMADM, 'tls-certs', join(certs, 'other-ca'), 'master', 'backup']);
});
afterAll(async () => {
  await rm(certs, { recursive: true, force: true });
});

function tlsNet(dir: string, node: string): string {
  const d = join(certs, dir);
  return `tls yes; tls-ca ${join(d, 'ca.crt')}; tls-cert ${join(d, `${node}.crt`)}; tls-key ${join(d, `${node}.key`)};`;
}

async function upBoth(pair: Pair): Promise<void> {
  for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
  for (const n of ['master', 'backup'] as const) await pair.ok(n, 'up', 'mysql');
}

/** Both engines stay apart for a few seconds: neither gets Connected, nothing was received. */
async function expectApart(pair: Pair): Promise<void> {
  await new Promise((r) => setTimeout(r, 3000));
  for (const n of ['master', 'backup'] as const) {
    const s = await pair.status(n);
    expect(s.cstate).not.toBe('Connected');
    expect(s.counters.nr).toBe(0);
  }
}

test('a pair connects over TLS 1.3 with the tutorial secret too, and replicates', async () => {
  const secret = 'cram-hmac-alg sha256; shared-secret "tls-and-secret";';
  const pair = await Pair.create({
    perNodeNet: { master: `${secret} ${tlsNet('good', 'master')}`, backup: `${secret} ${tlsNet('good', 'backup')}` },
  });
  try {
    await upBoth(pair);
    await pair.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected over TLS');
    await pair.ok('master', '--', '--force', 'primary', 'mysql');
    await pair.waitInSync();
    await tool('fio', [
      '--name=w',
      '--ioengine=nbd',
      `--uri=${pair.nbdUri('master')}`,
      '--rw=randwrite',
      '--bs=64k',
      '--size=16M',
      '--end_fsync=1',
    ]);
    await pair.waitInSync();
    const size = (await pair.status('master')).size;
    const sha = async (n: 'master' | 'backup'): Promise<string> =>
      createHash('sha256')
        .update(await pair.diskBytes(n, 0, size))
        .digest('hex');
    expect(await sha('backup')).toBe(await sha('master'));
    expect((await pair.status('backup')).counters.nr).toBeGreaterThan(0);
    for (const n of ['master', 'backup'] as const)
      expect(await readFile(pair.logPath(n), 'utf8')).toMatch(/"tls":"TLSv1\.3".*TLS established/);
  } finally {
    await pair.destroy();
  }
});

/** A node that trusts the right CA but presents a certificate issued by another one. */
function foreignCert(node: string): string {
  return tlsNet('good', node)
    .replace(`good/${node}.`, `other-ca/${node}.`)
    .replace(`good/${node}.`, `other-ca/${node}.`);
}

test.each([
  // Functions: the certificates exist only once beforeAll ran.
  ['the listener (backup)', 'master', () => ({ master: tlsNet('good', 'master'), backup: foreignCert('backup') })],
  ['the dialer (master)', 'backup', () => ({ master: foreignCert('master'), backup: tlsNet('good', 'backup') })],
] as const)(
  'a certificate from another CA, presented by %s, is refused by the other side',
  async (_who, judge, nets) => {
    const perNodeNet = nets();
    const pair = await Pair.create({ perNodeNet });
    try {
      expect(perNodeNet[judge === 'master' ? 'backup' : 'master']).toContain('other-ca');
      await upBoth(pair);
      const s = await pair.waitFor(
        judge,
        (x) => /peer certificate is not signed by tls-ca/.test(x.lastError ?? ''),
        20_000,
        'the certificate from another CA to be refused',
      );
      expect(s.lastError).toMatch(
        /^peer certificate is not signed by tls-ca \(CN=tandem peer CA [0-9a-f]{8}\): it was issued by CN=tandem peer CA [0-9a-f]{8}$/,
      );
      await expectApart(pair);
    } finally {
      await pair.destroy();
    }
  },
);

test('a certificate of the same CA that names another node is refused', async () => {
  // backup's engine presents the certificate of a node called "intruder".
  const pair = await Pair.create({
    perNodeNet: {
      master: tlsNet('good', 'master'),
      backup: tlsNet('good', 'backup').replace(/backup\.(crt|key)/g, 'intruder.$1'),
    },
  });
  try {
    await upBoth(pair);
    const m = await pair.waitFor(
      'master',
      (s) => (s.lastError ?? '').includes('peer certificate'),
      20_000,
      'the wrong name to be refused',
    );
    expect(m.lastError).toBe("peer certificate names 'intruder', not the peer node 'backup'");
    await expectApart(pair);
  } finally {
    await pair.destroy();
  }
});

test('a plaintext peer, or a plaintext client, at a TLS port is refused', async () => {
  const pair = await Pair.create({ perNodeNet: { backup: tlsNet('good', 'backup') } });
  try {
    await upBoth(pair);
    await pair.waitFor(
      'backup',
      (s) => /TLS handshake failed/.test(s.lastError ?? ''),
      20_000,
      'the TLS listener to refuse the plaintext dialer',
    );
    await expectApart(pair);
    // A plaintext client from the peer's address gets no frame back, only the TLS alert.
    const sock = net.connect({ host: '127.0.0.3', port: pair.port, localAddress: '127.0.0.2' });
    const got: Buffer[] = [];
    sock.on('data', (b: Buffer) => got.push(b));
    sock.on('error', () => {});
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write('TNDM plaintext hello mysql master backup\n');
    await new Promise<void>((r) => sock.once('close', () => r()));
    const said = Buffer.concat(got).toString('latin1');
    expect(said).not.toMatch(/mysql|master|backup|TNDM/);
  } finally {
    await pair.destroy();
  }
});
