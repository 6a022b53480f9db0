// npm run bench:control kept from rotting (issue 17 item 6): the bench itself at 20 volumes
// on 5 simulated nodes. A real etcd and kube-apiserver (the e2e harness's binaries, in a
// state dir of the bench's own), the real controller process, simulated agents and kubelets.
// Here and not under e2e: it needs no kubelets and starts its own API server, which the e2e
// suite's cluster (started once per run by its global setup) would hold the port of.
// The checks can fail: a volume whose Primary was on the lost node and that the controller
// did not decide (fail over, or block with a reason), a failover without the lost node's
// fence, two Primaries, and a controller that reads peer Secrets while everything is at rest.
import { jest } from '@jest/globals';
import { benchControl } from '../../scripts/bench-control.ts';

jest.setTimeout(300_000);

test('after a node loss every affected volume is decided, fenced, with one Primary; at rest no Secret reads', async () => {
  const r = await benchControl({ volumes: 20, nodes: 5, restSeconds: 10, log: () => {} });
  expect(r.loss.affected).toBeGreaterThanOrEqual(2);
  expect(r.loss.undecided).toEqual([]);
  expect(r.loss.decided).toBe(r.loss.affected);
  expect(r.loss.failedOver).toBe(r.loss.affected);
  expect(r.loss.unfenced).toEqual([]);
  expect(r.loss.twoPrimaries).toEqual([]);
  // The survivors are fresh and UpToDate: the controller decides within seconds of the loss.
  expect(r.loss.decide.max).toBeLessThan(5_000);
  expect(r.byResource.find((x) => x.verb === 'GET' && x.resource === 'secrets')?.perMinute ?? 0).toBeLessThan(1);
});
