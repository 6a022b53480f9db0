import { splitBrainCondition } from './agent.ts';
import type { EngineStatusView } from './engine-client.ts';

const engine = (cstate: string, decision?: string): EngineStatusView => ({
  resource: 'db.mysql',
  role: 'Secondary',
  peerRole: 'Unknown',
  cstate,
  disk: 'UpToDate',
  peerDisk: 'DUnknown',
  size: 1,
  counters: {},
  oosBytes: 0,
  uuids: { current: 'AB' },
  ...(decision ? { lastDecision: { decision, rule: 'both primaries changed data' } } : {}),
});

test.each([
  ['no decision yet', engine('WFConnection'), 'False', 'NoSplitBrain'],
  ['a normal resync decision', engine('Connected', 'source-bitmap'), 'False', 'NoSplitBrain'],
  ['a split brain left StandAlone', engine('StandAlone', 'split-brain'), 'True', 'SplitBrain'],
  ['a split brain a policy resolved', engine('SyncTarget', 'split-brain'), 'False', 'Resolved'],
] as const)('%s', (_n, e, status, reason) => {
  expect(splitBrainCondition(e)).toMatchObject({ type: 'SplitBrain', status, reason });
});
