// The executor says whether a pass changed anything: a pass that acted defers its report
// to the next pass, so a pass whose actions change nothing must say so, or the replica is
// never reported (a deleted volume's replica waited for the once-a-minute refresh).
import pino from 'pino';
import type { ReplicatedVolumeReplica } from '../api/replicated-volume-replica.ts';
import { type ConfigStore, type ConsumerPort, PlanExecutor } from './executor.ts';
import type { Plan } from './plan.ts';

const rvr = {
  apiVersion: 'tandem.dev/v1alpha1',
  kind: 'ReplicatedVolumeReplica',
  metadata: { name: 'db-master', namespace: 'ns', generation: 2 },
  spec: { resource: 'ns.db', node: 'master', engine: 'Down', mountPath: '/mydata/db' },
} as unknown as ReplicatedVolumeReplica;

test("a deleted volume's Down plan acts once, then finds nothing to do", async () => {
  let mounted = true;
  let config = true;
  const consumer = {
    release: async () => {
      const was = mounted;
      mounted = false;
      return was;
    },
  } as unknown as ConsumerPort;
  const store: ConfigStore = {
    write: async () => undefined,
    remove: async () => {
      const was = config;
      config = false;
      return was;
    },
  };
  const executor = new PlanExecutor({
    node: 'master',
    api: {} as never,
    engines: {} as never,
    config: store,
    consumer,
    fencer: {} as never,
  });
  const plan: Plan = {
    actions: [
      { kind: 'release-consumer', placeholder: false, failure: { type: 'EngineReady', reason: 'DownFailed' } },
      { kind: 'remove-config' },
    ],
    conditions: [],
  };
  const log = pino({ level: 'silent' });
  expect((await executor.run(rvr, plan, log)).acted).toBe(true);
  expect((await executor.run(rvr, plan, log)).acted).toBe(false);
});
