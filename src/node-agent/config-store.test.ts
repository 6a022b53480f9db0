// The engine's configuration and the node's TLS files, as the agent writes them into the run dir.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import { parseConfigText } from '../cli/drbd-config/index.ts';
import { FileConfigStore } from './config-store.ts';
import { EngineClient } from './engine-client.ts';

const spec: ReplicatedVolumeReplicaSpec = {
  volume: 'db',
  engine: 'Up',
  resource: 'ns.db',
  node: 'master',
  role: 'Secondary',
  initialSync: false,
  forcePrimary: false,
  epoch: 1,
  port: 7789,
  minor: 0,
  self: { node: 'master', address: '10.0.0.1', disk: '/var/lib/tandem/pools/p/ns.db.img', metaDisk: 'internal' },
  peer: { node: 'backup', address: '10.0.0.2', disk: '/var/lib/tandem/pools/p/ns.db.img', metaDisk: 'internal' },
  protocol: 'C',
  onIoError: 'detach',
  splitBrain: { afterSb0pri: 'disconnect', afterSb1pri: 'disconnect', afterSb2pri: 'disconnect' },
  pool: 'p',
  secretName: 'peer.ns.db',
};

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-config-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('with the node TLS material: files 0600 in a 0700 tls directory, the config names them', async () => {
  const store = new FileConfigStore(new EngineClient({ runDir: dir, node: 'master' }), '/bin/fence');
  const tls = { ca: 'CA PEM\n', cert: 'CERT PEM\n', key: 'KEY PEM\n' };
  await store.write(spec, 's', tls);
  expect((await stat(join(dir, 'tls'))).mode & 0o777).toBe(0o700);
  for (const [f, text] of [
    ['ca.crt', tls.ca],
    ['tls.crt', tls.cert],
    ['tls.key', tls.key],
  ] as const) {
    expect(await readFile(join(dir, 'tls', f), 'utf8')).toBe(text);
    expect((await stat(join(dir, 'tls', f))).mode & 0o777).toBe(0o600);
  }
  const conf = await readFile(join(dir, 'ns.db.res'), 'utf8');
  expect(parseConfigText(conf, join(dir, 'ns.db.res')).config.resources[0]!.net).toMatchObject({
    tls: true,
    tlsCa: join(dir, 'tls', 'ca.crt'),
    tlsCert: join(dir, 'tls', 'tls.crt'),
    tlsKey: join(dir, 'tls', 'tls.key'),
  });
});

test('without TLS material: no tls directory, no tls in the config', async () => {
  const store = new FileConfigStore(new EngineClient({ runDir: dir, node: 'master' }), '/bin/fence');
  await store.write(spec, 's');
  expect(await stat(join(dir, 'tls')).catch(() => 'none')).toBe('none');
  expect(await readFile(join(dir, 'ns.db.res'), 'utf8')).not.toContain('tls');
});

test('remove says whether there was a configuration', async () => {
  const store = new FileConfigStore(new EngineClient({ runDir: dir, node: 'master' }), '/bin/fence');
  await store.write(spec, 's');
  expect(await store.remove('ns.db')).toBe(true);
  expect(await stat(join(dir, 'ns.db.res')).catch(() => 'gone')).toBe('gone');
  expect(await store.remove('ns.db')).toBe(false);
});
