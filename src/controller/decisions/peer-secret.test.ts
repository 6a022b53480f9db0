import { PEER_SECRET_RECHECK_MS, peerSecretDue } from './peer-secret.ts';

const now = 1_000_000;

test.each([
  ['never seen by this controller', undefined, true, true],
  ['never seen, not Ready', undefined, false, true],
  ['seen, Ready: the link proves it', now - 10 * PEER_SECRET_RECHECK_MS, true, false],
  ['seen just now, not Ready', now - 1, false, false],
  ['seen a while ago, not Ready: look again', now - PEER_SECRET_RECHECK_MS, false, true],
])('%s', (_why, checkedAt, ready, due) => {
  expect(peerSecretDue(checkedAt, ready, now)).toBe(due);
});
