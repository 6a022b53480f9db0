// When does a reconcile look for the volume's peer Secret? It is created once, with the
// volume's first reconcile, and read from the API server (no cache holds Secrets), so
// asking on every reconcile costs a GET per reconcile: with every agent's heartbeat
// triggering a reconcile, that was the controller's largest share of requests at rest
// (issue 17 item 6, npm run bench:control). Asked when this controller has not seen it
// yet (a new volume, or a controller that just started), and again while the volume is
// not Ready, at most every PEER_SECRET_RECHECK_MS: a Secret deleted by hand is made again
// once a peer link needs it, and a Ready volume, whose link proves the Secret, costs nothing.
export const PEER_SECRET_RECHECK_MS = 60_000;

/**
 * `checkedAt`: when this controller last found or made the Secret (ms), undefined if never;
 * `ready`: the volume's phase as stored is Ready.
 */
export function peerSecretDue(checkedAt: number | undefined, ready: boolean, now: number): boolean {
  if (checkedAt === undefined) return true;
  return !ready && now - checkedAt >= PEER_SECRET_RECHECK_MS;
}
