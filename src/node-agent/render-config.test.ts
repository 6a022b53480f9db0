// The rendered configuration must mean, to tandemadm's own parser, exactly what the replica spec says.
import { parseConfigText } from '../cli/drbd-config/index.ts';
import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import fc from 'fast-check';
import { ConfigValueError, fenceHandlerCommand, renderConfig } from './render-config.ts';

const spec: ReplicatedVolumeReplicaSpec = {
  volume: 'mysql',
  engine: 'Up',
  resource: 'db.mysql',
  node: 'master',
  role: 'Primary',
  initialSync: false,
  forcePrimary: false,
  epoch: 3,
  port: 7790,
  minor: 1,
  self: { node: 'master', address: '10.77.0.11', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
  peer: { node: 'backup', address: '10.77.0.12', disk: '/dev/sdb1', metaDisk: 'internal' },
  protocol: 'B',
  sizeBytes: 512 * 2 ** 20,
  resyncRateBytes: 100 * 2 ** 20,
  verifyAlg: 'sha1',
  onIoError: 'pass_on',
  splitBrain: { afterSb0pri: 'discard-zero-changes', afterSb1pri: 'discard-secondary', afterSb2pri: 'disconnect' },
  pool: 'tutorial',
  secretName: 'mysql-peer',
};

test('with the node TLS files: tls yes and the three paths, the shared secret still there', () => {
  const tls = { ca: '/run/tandem/tls/ca.crt', cert: '/run/tandem/tls/tls.crt', key: '/run/tandem/tls/tls.key' };
  const { config, warnings } = parseConfigText(renderConfig(spec, 'x', undefined, tls), '/run/tandem/db.mysql.res');
  expect(warnings).toEqual([]);
  expect(config.resources[0]!.net).toMatchObject({
    tls: true,
    tlsCa: tls.ca,
    tlsCert: tls.cert,
    tlsKey: tls.key,
    sharedSecret: 'x',
  });
  expect(parseConfigText(renderConfig(spec, 'x'), '/r.res').config.resources[0]!.net.tls).toBeFalsy();
});

test('tandemadm parses the rendered file back into the spec', () => {
  const { config, warnings } = parseConfigText(renderConfig(spec, 's3cr"t\\x'), '/run/tandem/db.mysql.res');
  expect(warnings).toEqual([]);
  const res = config.resources[0]!;
  expect(res).toMatchObject({ name: 'db.mysql', protocol: 'B', options: { attach: 'auto' } });
  expect(res.net).toMatchObject({
    cramHmacAlg: 'sha256',
    sharedSecret: 's3cr"t\\x',
    verifyAlg: 'sha1',
    afterSb0pri: 'discard-zero-changes',
    afterSb1pri: 'discard-secondary',
    afterSb2pri: 'disconnect',
  });
  expect(res.disk).toMatchObject({ onIoError: 'pass_on', size: 512 * 2 ** 20, resyncRate: 100 * 2 ** 20 });
  expect(res.hosts).toEqual([
    expect.objectContaining({
      name: 'master',
      device: '/dev/nbd1',
      disk: '/dev/sdb1',
      metaDisk: { kind: 'indexed', path: '/dev/sdb2', index: 0 },
      address: { family: 'ipv4', host: '10.77.0.11', port: 7790 },
      minor: 1,
    }),
    expect.objectContaining({
      name: 'backup',
      disk: '/dev/sdb1',
      metaDisk: { kind: 'internal' },
      address: { family: 'ipv4', host: '10.77.0.12', port: 7790 },
    }),
  ]);
});

test('with a fence handler: fencing resource-and-stonith and the fence-peer, unfence-peer and split-brain commands, quoted so sh runs it as written', () => {
  const command = fenceHandlerCommand('/usr/local/bin/node', '/app/bin/tandem-fence-peer.js', "/run/it's/agent.sock");
  expect(command).toBe("'/usr/local/bin/node' '/app/bin/tandem-fence-peer.js' '/run/it'\\''s/agent.sock'");
  const { config, warnings } = parseConfigText(renderConfig(spec, 'x', { command }), '/run/tandem/db.mysql.res');
  expect(warnings).toEqual([]);
  const res = config.resources[0]!;
  expect(res.disk).toMatchObject({
    fencing: 'resource-and-stonith',
    discardedDataDir: '/var/lib/tandem/discarded/master',
  });
  expect(res.handlers).toEqual({ 'fence-peer': command, 'unfence-peer': command, 'split-brain': command });
});

test('without a fence handler the engine does not freeze on peer loss', () => {
  const res = parseConfigText(renderConfig(spec, 'x'), '/run/tandem/db.mysql.res').config.resources[0]!;
  expect(res.disk.fencing).toBe('dont-care');
});

// --- hostile values (issue 15 item 2): quoting is the inverse of tandemadm's tokenizer ---

/** Fragments that would end a statement, open a section or start a comment if written bare. */
const FRAGMENTS = [
  ';',
  '{',
  '}',
  '"',
  '\\',
  '\\"',
  '\n',
  '\r',
  '\t',
  ' ',
  '#',
  '//',
  '[0]',
  '[',
  ']',
  '\u0000',
  '\u2028',
  '\uFEFF',
  '\uD800',
  ';\n  }\n  handlers { split-brain "id > /tmp/pwned"; }\n  disk { fencing dont-care; }\n  on x {',
  '" ; handlers { fence-peer "sh -c id" ; } #',
  '\\"; } net { allow-two-primaries; } #',
];
const hostile = fc
  .array(fc.oneof(fc.constantFrom(...FRAGMENTS), fc.string({ unit: 'binary', maxLength: 8 })), { maxLength: 8 })
  .map((parts) => parts.join(''));
const hostilePath = fc.tuple(fc.boolean(), hostile).map(([abs, s]) => (abs ? `/dev/${s}` : s));
const hostileMeta = fc.oneof(
  fc.constant('internal'),
  hostilePath,
  fc.tuple(hostilePath, fc.nat(99)).map(([p, i]) => `${p}[${i}]`),
);

/** The test's own model: a lone UTF-16 surrogate, or a control character. */
const loneSurrogate = (s: string) => /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
const control = (s: string) => [...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);
const representablePath = (p: string) => p.startsWith('/') && !loneSurrogate(p) && !control(p) && !/[[\]]/.test(p);
const representableMeta = (m: string) => {
  if (m === 'internal') return true;
  const i = /^(.*)\[(\d+)\]$/.exec(m);
  return representablePath(i ? (i[1] as string) : m);
};
const expectedMeta = (m: string) => {
  if (m === 'internal') return { kind: 'internal' };
  const i = /^(.*)\[(\d+)\]$/.exec(m);
  return i ? { kind: 'indexed', path: i[1], index: Number(i[2]) } : { kind: 'flexible', path: m };
};

test('hostile disk, meta-disk, secret, volume and verify-alg values round-trip exactly or are refused; nothing else appears', () => {
  const command = fenceHandlerCommand('/usr/local/bin/node', '/app/bin/tandem-fence-peer.js', '/run/tandem/agent.sock');
  const parse = (text: string) => {
    const { config, warnings } = parseConfigText(text, '/run/tandem/db.mysql.res');
    expect(warnings).toEqual([]);
    expect(config.global).toEqual({ options: {} });
    expect(config.resources).toHaveLength(1);
    return config.resources[0]!;
  };
  const baseline = parse(renderConfig(spec, 'x', { command }));
  fc.assert(
    fc.property(
      fc.record({
        disk: hostilePath,
        metaDisk: hostileMeta,
        peerDisk: hostilePath,
        peerMeta: hostileMeta,
        secret: hostile,
        volume: hostile,
        verifyAlg: hostile,
        fenced: fc.boolean(),
      }),
      (v) => {
        const s: ReplicatedVolumeReplicaSpec = {
          ...spec,
          volume: v.volume,
          verifyAlg: v.verifyAlg,
          self: { ...spec.self, disk: v.disk, metaDisk: v.metaDisk },
          peer: { ...spec.peer, disk: v.peerDisk, metaDisk: v.peerMeta },
        };
        const representable =
          representablePath(v.disk) &&
          representablePath(v.peerDisk) &&
          representableMeta(v.metaDisk) &&
          representableMeta(v.peerMeta) &&
          !loneSurrogate(v.secret) &&
          // An empty verify-alg is no verify-alg: it is left out.
          [v.volume, ...(v.verifyAlg ? [v.verifyAlg] : [])].every((n) => !loneSurrogate(n) && n !== '' && !control(n));
        let text: string;
        try {
          text = renderConfig(s, v.secret, v.fenced ? { command } : undefined);
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigValueError);
          expect(representable).toBe(false);
          return;
        }
        expect(representable).toBe(true);
        const res = parse(text);
        // Exactly the baseline with the hostile values in their places: no handler, no
        // option, no host that was not put there.
        expect(res).toEqual({
          ...baseline,
          net: { ...baseline.net, sharedSecret: v.secret, verifyAlg: v.verifyAlg || undefined },
          disk: v.fenced ? baseline.disk : { ...baseline.disk, fencing: 'dont-care' },
          handlers: v.fenced ? { 'fence-peer': command, 'unfence-peer': command, 'split-brain': command } : {},
          hosts: [
            { ...baseline.hosts[0], disk: v.disk, metaDisk: expectedMeta(v.metaDisk) },
            { ...baseline.hosts[1], disk: v.peerDisk, metaDisk: expectedMeta(v.peerMeta) },
          ],
        });
      },
    ),
    { numRuns: 2000 },
  );
});

test.each([
  ['a node name that is a path', { ...spec, node: '../../etc' }, 'node'],
  ['a peer node name with a brace', { ...spec, peer: { ...spec.peer, node: 'b}' } }, 'peer.node'],
  [
    'an address that is not an IP',
    { ...spec, self: { ...spec.self, address: '1.2.3.4:1; } handlers {' } },
    'self.address',
  ],
  ['a resource name with a space', { ...spec, resource: 'a b' }, 'resource'],
  ['an unknown protocol', { ...spec, protocol: 'C; handlers {' as 'C' }, 'protocol'],
  ['a port out of range', { ...spec, port: 70000 }, 'port'],
  ['a disk with a newline', { ...spec, self: { ...spec.self, disk: '/dev/sdb1\n' } }, 'self.disk'],
])('refuses %s', (_what, s, field) => {
  expect(() => renderConfig(s, 'x')).toThrow(expect.objectContaining({ code: 'TANDEM_ERR_CONFIG_VALUE', field }));
});
