import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from './config-error.ts';
import { loadConfigFile, parseConfigText, type ParseResult } from './load.ts';
import { configErrorOf } from './test-support.ts';

// testdata/tutorial holds the tutorial's files (sections 7.1-7.3) exactly as printed,
// `//` comments included; section 7.1's drbd.conf includes the other two.
const TUTORIAL = join(import.meta.dirname, 'testdata', 'tutorial');

/** Serves files from memory; `files` maps absolute paths to their text. */
function memoryFiles(files: Record<string, string>) {
  return {
    readFile(path: string): string {
      const text = files[path];
      if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      return text;
    },
    glob(pattern: string): string[] {
      const re = new RegExp(`^${pattern.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
      return Object.keys(files)
        .filter((path) => re.test(path))
        .reverse();
    },
  };
}

const parse = (text: string, files: Record<string, string> = {}): ParseResult =>
  parseConfigText(text, '/etc/tandem/tandem.conf', memoryFiles(files));

describe('the tutorial configuration, loaded as /etc/drbd.conf', () => {
  let dir: string;
  let result: ParseResult;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tandem-config-'));
    cpSync(TUTORIAL, join(dir, 'etc'), { recursive: true });
    result = await loadConfigFile(join(dir, 'etc', 'drbd.conf'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('has one resource, mysql, defined in drbd.d/mysql.res, and no warnings', () => {
    expect(result.config.resources.map((r) => [r.name, r.source])).toEqual([
      ['mysql', `${join(dir, 'etc', 'drbd.d', 'mysql.res')}:1`],
    ]);
    expect(result.warnings).toEqual([]);
    expect(result.config.global).toEqual({ usageCount: 'no', options: {} });
  });

  it('normalizes protocol, syncer rate, verify-alg, allow-two-primaries and on-io-error', () => {
    const [mysql] = result.config.resources;
    expect(mysql?.protocol).toBe('C');
    expect(mysql?.disk).toEqual({
      onIoError: 'detach',
      resyncRate: 1073741824,
      alExtents: 1237,
      discardedDataDir: '/var/lib/tandem/discarded',
      fencing: 'dont-care',
    });
    expect(mysql?.net).toMatchObject({
      allowTwoPrimaries: true,
      verifyAlg: 'sha1',
      afterSb0pri: 'disconnect',
      timeoutMs: 6000,
    });
  });

  it('gives both hosts the resource-level device and indexed meta-disk, and their own disk and address', () => {
    const shared = {
      device: '/dev/drbd0',
      minor: 0,
      disk: '/dev/sdb1',
      metaDisk: { kind: 'indexed', path: '/dev/sdb2', index: 0 },
    };
    expect(result.config.resources[0]?.hosts).toEqual([
      { name: 'master', ...shared, address: { family: 'ipv4', host: '192.168.1.101', port: 7789 } },
      { name: 'backup', ...shared, address: { family: 'ipv4', host: '192.168.1.102', port: 7789 } },
    ]);
  });

  it('keeps the handler commands from common intact, semicolons and all', () => {
    expect(result.config.resources[0]?.handlers).toEqual({
      'pri-on-incon-degr':
        '/usr/lib/drbd/notify-pri-on-incon-degr.sh; /usr/lib/drbd/notify-emergency-reboot.sh; echo b > /proc/sysrq-trigger ; reboot -f',
      'pri-lost-after-sb':
        '/usr/lib/drbd/notify-pri-lost-after-sb.sh; /usr/lib/drbd/notify-emergency-reboot.sh; echo b > /proc/sysrq-trigger ; reboot -f',
      'local-io-error':
        '/usr/lib/drbd/notify-io-error.sh; /usr/lib/drbd/notify-emergency-shutdown.sh; echo o > /proc/sysrq-trigger ; halt -f',
    });
  });

  it('reports an include that matches the including file itself as a cycle', async () => {
    writeFileSync(join(dir, 'etc', 'drbd.d', 'loop.conf'), 'include "*.conf";\n');
    await expect(loadConfigFile(join(dir, 'etc', 'drbd.d', 'loop.conf'))).rejects.toThrow(
      `${join(dir, 'etc', 'drbd.d', 'loop.conf')}:1:9: include cycle: ${join(dir, 'etc', 'drbd.d', 'loop.conf')} -> ${join(dir, 'etc', 'drbd.d', 'loop.conf')}`,
    );
  });
});

describe('loadConfigFile', () => {
  it('names a missing configuration file', async () => {
    await expect(loadConfigFile('/nonexistent/tandem.conf')).rejects.toThrow(
      new ConfigError('cannot read configuration file: no such file', '/nonexistent/tandem.conf'),
    );
  });

  it('accepts a glob that matches nothing but not a missing plain include', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tandem-config-'));
    try {
      mkdirSync(join(dir, 'drbd.d'));
      writeFileSync(join(dir, 'a.conf'), 'include "drbd.d/*.res";\n');
      await expect(loadConfigFile(join(dir, 'a.conf'))).resolves.toEqual({
        config: { global: { options: {} }, resources: [] },
        warnings: [],
      });
      writeFileSync(join(dir, 'b.conf'), '\n  include drbd.d/x.res;\n');
      await expect(loadConfigFile(join(dir, 'b.conf'))).rejects.toThrow(
        `${join(dir, 'b.conf')}:2:11: cannot include 'drbd.d/x.res': no such file (${join(dir, 'drbd.d', 'x.res')})`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const TWO_HOSTS = `
  on alpha { disk /dev/vdb; address 10.0.0.1:7789; }
  on beta  { disk /dev/vdb; address 10.0.0.2:7789; }`;

describe('parseConfigText', () => {
  it('reads include globs relative to the including file, in sorted order', () => {
    const { config } = parse('include "conf.d/*.res";', {
      '/etc/tandem/conf.d/b.res': `resource b { device minor 2; meta-disk internal; ${TWO_HOSTS} }`,
      '/etc/tandem/conf.d/a.res': `resource a { device minor 1; meta-disk internal; ${TWO_HOSTS} }`,
      '/etc/tandem/other/c.res': 'this is not read',
    });
    expect(config.resources.map((r) => [r.name, r.source])).toEqual([
      ['a', '/etc/tandem/conf.d/a.res:1'],
      ['b', '/etc/tandem/conf.d/b.res:1'],
    ]);
  });

  it('lets resource values win over common, and on sections over resource-level statements', () => {
    const { config } = parse(`
      common {
        protocol A;
        net { max-buffers 100; timeout 90; cram-hmac-alg sha1; }
        handlers { split-brain "/bin/notify"; fence-peer "/bin/fence"; }
        syncer { rate 10M; al-extents 257; }
      }
      resource r0 {
        net { protocol B; timeout 30; shared-secret "s3cr\\"et"; allow-two-primaries no; }
        disk { resync-rate 200; c-max-rate 1G; c-fill-target 100; size 1G; on-io-error pass_on; }
        handlers { split-brain "/bin/other"; }
        startup { wfc-timeout 15; wait-after-sb; }
        device /dev/drbd7;
        disk /dev/vdb;
        meta-disk /dev/vdc [3];
        on alpha { address 10.0.0.1:7000; }
        on beta { device /dev/drbd_beta minor 9; disk /dev/vdd; meta-disk /dev/vde; address ipv6 [fd00::2]:7001; }
      }`);
    const [r0] = config.resources;
    expect(r0?.protocol).toBe('B');
    expect(r0?.net.tls).toBe(false);
    expect(r0?.net).toMatchObject({
      maxBuffers: 100,
      timeoutMs: 3000,
      cramHmacAlg: 'sha1',
      sharedSecret: 's3cr"et',
      allowTwoPrimaries: false,
    });
    expect(r0?.disk).toEqual({
      resyncRate: 204800,
      alExtents: 257,
      cMaxRate: 1024 ** 3,
      cFillTarget: 51200,
      size: 1024 ** 3,
      onIoError: 'pass_on',
      discardedDataDir: '/var/lib/tandem/discarded',
      fencing: 'dont-care',
    });
    expect(r0?.handlers).toEqual({ 'split-brain': '/bin/other', 'fence-peer': '/bin/fence' });
    expect(r0?.startup).toEqual({ 'wfc-timeout': '15', 'wait-after-sb': 'yes' });
    expect(r0?.hosts).toEqual([
      {
        name: 'alpha',
        device: '/dev/drbd7',
        minor: 7,
        disk: '/dev/vdb',
        metaDisk: { kind: 'indexed', path: '/dev/vdc', index: 3 },
        address: { family: 'ipv4', host: '10.0.0.1', port: 7000 },
      },
      {
        name: 'beta',
        device: '/dev/drbd_beta',
        minor: 9,
        disk: '/dev/vdd',
        metaDisk: { kind: 'flexible', path: '/dev/vde' },
        address: { family: 'ipv6', host: 'fd00::2', port: 7001 },
      },
    ]);
  });

  it('converts net timers from DRBD units and takes device minor N', () => {
    const { config } = parse(`resource r {
      net { timeout 50; ping-timeout 7; connect-int 3; ping-int 4; after-sb-0pri discard-node-alpha; after-sb-1pri consensus; after-sb-2pri violently-as0p; }
      device minor 3; meta-disk internal; ${TWO_HOSTS} }`);
    const [r] = config.resources;
    expect(r?.net).toMatchObject({
      timeoutMs: 5000,
      pingTimeoutMs: 700,
      connectIntMs: 3000,
      pingIntMs: 4000,
      afterSb0pri: 'discard-node-alpha',
      afterSb1pri: 'consensus',
      afterSb2pri: 'violently-as0p',
    });
    expect(r?.hosts[0]).toMatchObject({ minor: 3, metaDisk: { kind: 'internal' } });
    expect(r?.hosts[0]?.device).toBeUndefined();
  });

  it('collects options tandem does not implement as warnings and keeps going', () => {
    const { config, warnings } = parse(`resource r {
      disk { md-flushes no; }
      net { sndbuf-size 0; protocol C; }
      syncer { cpu-mask 3; }
      meta-disk internal; ${TWO_HOSTS} }`);
    expect(config.resources).toHaveLength(1);
    expect(warnings).toEqual([
      "/etc/tandem/tandem.conf:2:14: ignoring disk option 'md-flushes': not implemented by tandem",
      "/etc/tandem/tandem.conf:3:13: ignoring net option 'sndbuf-size': not implemented by tandem",
      "/etc/tandem/tandem.conf:4:16: ignoring syncer option 'cpu-mask': not implemented by tandem",
    ]);
  });

  it('skips blocks marked with skip, like drbdadm', () => {
    expect(parse('skip resource old { anything { goes; } }').config.resources).toEqual([]);
  });
});

// One line per statement so that line numbers are easy to read off.
const resource = (...body: string[]): string => ['resource r {', ...body, '}'].join('\n');
const ALPHA = 'on alpha { disk /dev/vdb; address 10.0.0.1:7789; }';
const BETA = 'on beta { disk /dev/vdb; address 10.0.0.2:7789; }';
const F = '/etc/tandem/tandem.conf';

it('reads the TLS options of the net section', () => {
  const { config } = parse(
    resource(
      'meta-disk internal;',
      'net { tls yes; tls-ca /etc/tandem/tls/ca.crt; tls-cert "/etc/tandem/tls/node.crt"; tls-key /etc/tandem/tls/node.key; }',
      ALPHA,
      BETA,
    ),
  );
  expect(config.resources[0]?.net).toMatchObject({
    tls: true,
    tlsCa: '/etc/tandem/tls/ca.crt',
    tlsCert: '/etc/tandem/tls/node.crt',
    tlsKey: '/etc/tandem/tls/node.key',
  });
});

describe('broken configurations', () => {
  it.each<[string, string, string, Record<string, string>?]>([
    ['a missing semicolon', resource('  protocol C', '}'), `${F}:3:1: expected ';' after 'protocol C' but found '}'`],
    [
      'a missing semicolon between options',
      resource('  disk { on-io-error detach', '    al-extents 7; }'),
      `${F}:3:5: expected ';' after 'on-io-error detach' but found 'al-extents'`,
    ],
    [
      'an unterminated string',
      resource('  handlers {', '    split-brain "/bin/notify;', '  }'),
      `${F}:3:17: unterminated string: expected '"' before the end of the line`,
    ],
    [
      'an unclosed brace',
      resource('  meta-disk internal;', `  ${ALPHA}`, '  on beta {').replace(/\}$/, ''),
      `${F}:5:1: expected '}' to close 'on beta' (opened at ${F}:4:11) but found end of file`,
    ],
    [
      'an extra closing brace',
      `${resource('meta-disk internal;', ALPHA, BETA)}\n}`,
      `${F}:6:1: expected 'global', 'common', 'resource' or 'include' but found '}'`,
    ],
    [
      'a bad IPv4 address',
      resource('meta-disk internal;', ALPHA, 'on beta { disk /dev/vdb; address 10.0.0.256:7789; }'),
      `${F}:4:34: bad address '10.0.0.256:7789': expected an IPv4 address and a port, like 'address 192.168.1.101:7789'`,
    ],
    [
      'an address without a port',
      resource('address 10.0.0.1;'),
      `${F}:2:9: bad address '10.0.0.1': expected an IPv4 address and a port, like 'address 192.168.1.101:7789'`,
    ],
    [
      'an out-of-range port',
      resource('address ipv6 [fd00::1]:70000;'),
      `${F}:2:14: bad address '[fd00::1]:70000': port must be between 1 and 65535`,
    ],
    [
      'an unsupported address family',
      resource('address sdp 10.0.0.1:7789;'),
      `${F}:2:9: address family 'sdp' is not supported (use ipv4 or ipv6)`,
    ],
    ['a bad protocol', resource('protocol D;'), `${F}:2:10: protocol must be A, B or C but found 'D'`],
    [
      'tls without its files',
      resource('meta-disk internal;', 'net { tls yes; tls-ca /etc/tandem/ca.crt; }', ALPHA, BETA),
      `${F}:1:1: resource r: net { tls yes; } needs tls-cert, tls-key`,
    ],
    [
      'a bad protocol in net',
      'common {\n  net { protocol c; }\n}',
      `${F}:2:18: protocol must be A, B or C but found 'c'`,
    ],
    [
      'an unknown top-level keyword',
      'global { usage-count no; }\nresources r { }',
      `${F}:2:1: expected 'global', 'common', 'resource' or 'include' but found 'resources'`,
    ],
    [
      'an unknown statement in a resource',
      resource('floating 10.0.0.1:7789 { }'),
      `${F}:2:1: unknown statement 'floating' in resource r (expected on, protocol, net, disk, syncer, handlers, startup, options, device, meta-disk or address)`,
    ],
    [
      'a missing disk in an on section',
      resource('meta-disk internal;', ALPHA, 'on beta { address 10.0.0.2:7789; }'),
      `${F}:4:1: resource r: on beta: missing 'disk'`,
    ],
    [
      'missing meta-disk and address',
      resource('on alpha { disk /dev/vdb; meta-disk internal; address 10.0.0.1:7789; }', 'on beta { disk /dev/vdb; }'),
      `${F}:3:1: resource r: on beta: missing 'meta-disk', 'address'`,
    ],
    ['a resource without on sections', resource('meta-disk internal;'), `${F}:1:1: resource r: no 'on HOST' sections`],
    [
      'a volume section',
      resource('volume 0 {', '  device minor 0;', '}'),
      `${F}:2:1: 'volume' sections are not supported yet: give device, disk and meta-disk directly in the resource or its 'on' sections`,
    ],
    [
      'a duplicate resource',
      `${resource('meta-disk internal;', ALPHA)}\n${resource()}`,
      `${F}:5:10: resource r is defined twice (first at ${F}:1:1)`,
    ],
    [
      'a duplicate on section',
      resource('meta-disk internal;', ALPHA, ALPHA.replace('10.0.0.1', '10.0.0.3')),
      `${F}:4:1: resource r: 'on alpha' appears twice (first at ${F}:3:1)`,
    ],
    ['a bad number', resource('net { timeout soon; }'), `${F}:2:15: expected a number for 'timeout' but found 'soon'`],
    [
      'a bad rate',
      resource('syncer { rate 10MB; }'),
      `${F}:2:15: expected a number with an optional unit (s, K, M, G) for 'rate' but found '10MB'`,
    ],
    [
      'a bad after-sb policy',
      resource('net { after-sb-2pri discard-local; }'),
      `${F}:2:21: 'after-sb-2pri' must be one of disconnect, violently-as0p, call-pri-lost-after-sb but found 'discard-local'`,
    ],
    [
      'a bad flag value',
      resource('net { allow-two-primaries maybe; }'),
      `${F}:2:27: 'allow-two-primaries' takes 'yes', 'no' or no value, not 'maybe'`,
    ],
    [
      'a value the schema rejects',
      resource('meta-disk internal;', 'net { max-buffers 0; }', ALPHA),
      `${F}:1:1: resource r: net.maxBuffers: Too small: expected number to be >0`,
    ],
    [
      'a bad device',
      resource('device drbd0;'),
      `${F}:2:8: expected a device path like /dev/drbd0 or 'minor N' after 'device' but found 'drbd0'`,
    ],
    [
      'an include of a missing file',
      'include "drbd.d/global_common.conf";',
      `${F}:1:9: cannot include 'drbd.d/global_common.conf': no such file (/etc/tandem/drbd.d/global_common.conf)`,
    ],
    [
      'an include cycle',
      'include "a.conf";',
      `/etc/tandem/b.conf:2:9: include cycle: /etc/tandem/a.conf -> /etc/tandem/b.conf -> /etc/tandem/a.conf`,
      { '/etc/tandem/a.conf': 'include "b.conf";', '/etc/tandem/b.conf': '# b\ninclude "a.conf";' },
    ],
  ])('reports %s with its location', (_name, text, message, files = {}) => {
    const err = configErrorOf(() => parse(text, files));
    expect(err.code).toBe('TANDEM_ERR_CONFIG');
    expect(err.message).toBe(message);
  });
});
