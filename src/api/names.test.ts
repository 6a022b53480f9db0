import { peerSecretName } from './names.ts';

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

test('peer Secret names: one per volume (namespaces have no dots), a valid Secret name however long', () => {
  expect(peerSecretName('db', 'mysql')).toBe('peer.db.mysql');
  const long = 'v'.repeat(253);
  for (const name of [peerSecretName('team-a', long), peerSecretName('team-b', long)]) {
    expect(name.length).toBeLessThanOrEqual(253);
    expect(name).toMatch(DNS_SUBDOMAIN);
  }
  expect(peerSecretName('team-a', long)).not.toBe(peerSecretName('team-b', long));
});
