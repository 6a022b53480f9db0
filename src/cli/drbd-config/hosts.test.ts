import { findResource, selectHosts } from './hosts.ts';
import { parseConfigText } from './load.ts';
import { configErrorOf } from './test-support.ts';

const config = parseConfigText(
  `resource mysql {
     device /dev/drbd0; disk /dev/sdb1; meta-disk internal;
     on master { address 192.168.1.101:7789; }
     on backup { address 192.168.1.102:7789; }
   }
   resource solo { device minor 4; disk /dev/vdb; meta-disk internal; on alone { address 10.0.0.1:7790; } }
   resource trio {
     disk /dev/vdb; meta-disk internal;
     on a { address 10.0.0.1:7791; }
     on b { address 10.0.0.2:7791; }
     on c { address 10.0.0.3:7791; }
   }`,
  '/etc/tandem/tandem.conf',
).config;

describe('findResource', () => {
  it('finds a resource by name', () => {
    expect(findResource(config, 'solo').hosts.map((h) => h.minor)).toEqual([4]);
  });

  it('names the known resources when there is no such resource', () => {
    expect(configErrorOf(() => findResource(config, 'pgsql')).message).toBe(
      "no resource 'pgsql' in the configuration (known: mysql, solo, trio)",
    );
  });
});

describe('selectHosts', () => {
  const mysql = findResource(config, 'mysql');

  it.each([
    ['master', '192.168.1.101', '192.168.1.102'],
    ['backup', '192.168.1.102', '192.168.1.101'],
  ])('on %s, picks its own section and the other one as the peer', (node, selfHost, peerHost) => {
    const { self, peer } = selectHosts(mysql, node);
    expect([self.name, self.address.host, peer?.address.host]).toEqual([node, selfHost, peerHost]);
  });

  it('has no peer for a resource with a single on section', () => {
    expect(selectHosts(findResource(config, 'solo'), 'alone')).toMatchObject({
      self: { name: 'alone' },
      peer: undefined,
    });
  });

  it('refuses a node that has no on section', () => {
    const err = configErrorOf(() => selectHosts(mysql, 'foo'));
    expect(err.code).toBe('TANDEM_ERR_CONFIG');
    expect(err.message).toBe(
      "/etc/tandem/tandem.conf:1: resource mysql: no 'on' section matches node 'foo' (known: master, backup)",
    );
  });

  it('refuses more than two on sections', () => {
    expect(configErrorOf(() => selectHosts(findResource(config, 'trio'), 'a')).message).toBe(
      "/etc/tandem/tandem.conf:7: resource trio: only two nodes per resource are supported (found 3 'on' sections)",
    );
  });
});
