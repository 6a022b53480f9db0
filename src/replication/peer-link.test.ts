import { loadTls, sameHost } from './peer-link.ts';

describe('sameHost (the listener closes connections from any other address unread)', () => {
  test.each([
    ['127.0.0.2', '127.0.0.2', true],
    ['::ffff:127.0.0.2', '127.0.0.2', true],
    ['127.0.0.1', '127.0.0.2', false],
    ['fd00:0:0::1', 'fd00::1', true],
    ['FD00::1', 'fd00::1', true],
    ['fd00::2', 'fd00::1', false],
    [undefined, '127.0.0.2', false],
  ])('%s from a peer configured as %s: %s', (remote, configured, same) => {
    expect(sameHost(remote, configured)).toBe(same);
  });
});

describe('loadTls', () => {
  test('a missing file is named in the error', () => {
    expect(() => loadTls({ ca: '/nonexistent/ca.crt', cert: '/nonexistent/n.crt', key: '/nonexistent/n.key' })).toThrow(
      /^tls-ca \/nonexistent\/ca\.crt: ENOENT/,
    );
  });
});
