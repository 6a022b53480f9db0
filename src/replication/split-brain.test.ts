import { resolveSplitBrain, type SplitBrainInput, type SplitBrainOutcome } from './split-brain.ts';

const side = (name: string, role: 'Primary' | 'Secondary', changes: number, primaryAtSplit = false) => ({
  name,
  role,
  changes,
  primaryAtSplit,
});
const policy = (p0: string, p1 = 'disconnect', p2 = 'disconnect') =>
  ({ afterSb0pri: p0, afterSb1pri: p1, afterSb2pri: p2 }) as SplitBrainInput['policy'];
const mirror = (o: SplitBrainOutcome): SplitBrainOutcome['victim'] =>
  o.victim === 'self' ? 'peer' : o.victim === 'peer' ? 'self' : undefined;

describe('resolveSplitBrain', () => {
  test.each<[string, SplitBrainInput, 'self' | 'peer' | undefined, Partial<SplitBrainOutcome>]>([
    [
      'default policy disconnects',
      { policy: policy('disconnect'), self: side('master', 'Secondary', 5), peer: side('backup', 'Secondary', 3) },
      undefined,
      {},
    ],
    [
      'discard-zero-changes discards the side that changed nothing',
      {
        policy: policy('discard-zero-changes'),
        self: side('master', 'Secondary', 0),
        peer: side('backup', 'Secondary', 3),
      },
      'self',
      {},
    ],
    [
      'discard-zero-changes disconnects when both changed',
      {
        policy: policy('discard-zero-changes'),
        self: side('master', 'Secondary', 2),
        peer: side('backup', 'Secondary', 3),
      },
      undefined,
      {},
    ],
    [
      'discard-least-changes',
      {
        policy: policy('discard-least-changes'),
        self: side('master', 'Secondary', 10),
        peer: side('backup', 'Secondary', 3),
      },
      'peer',
      {},
    ],
    [
      'discard-least-changes tie disconnects',
      {
        policy: policy('discard-least-changes'),
        self: side('master', 'Secondary', 3),
        peer: side('backup', 'Secondary', 3),
      },
      undefined,
      {},
    ],
    [
      'discard-younger-primary keeps the pre-split Primary',
      {
        policy: policy('discard-younger-primary'),
        self: side('master', 'Secondary', 9, true),
        peer: side('backup', 'Secondary', 1),
      },
      'peer',
      {},
    ],
    [
      'discard-older-primary discards the pre-split Primary',
      {
        policy: policy('discard-older-primary'),
        self: side('master', 'Secondary', 9, true),
        peer: side('backup', 'Secondary', 1),
      },
      'self',
      {},
    ],
    [
      'discard-node-backup',
      {
        policy: policy('discard-node-backup'),
        self: side('master', 'Secondary', 1),
        peer: side('backup', 'Secondary', 1),
      },
      'peer',
      {},
    ],
    [
      '1pri discard-secondary',
      {
        policy: policy('disconnect', 'discard-secondary'),
        self: side('master', 'Primary', 5),
        peer: side('backup', 'Secondary', 50),
      },
      'peer',
      {},
    ],
    [
      '1pri consensus agrees when 0pri discards the Secondary',
      {
        policy: policy('discard-least-changes', 'consensus'),
        self: side('master', 'Primary', 50),
        peer: side('backup', 'Secondary', 5),
      },
      'peer',
      {},
    ],
    [
      '1pri consensus refuses to discard the Primary',
      {
        policy: policy('discard-least-changes', 'consensus'),
        self: side('master', 'Primary', 5),
        peer: side('backup', 'Secondary', 50),
      },
      undefined,
      {},
    ],
    [
      '1pri violently-as0p discards the Primary by force',
      {
        policy: policy('discard-least-changes', 'violently-as0p'),
        self: side('master', 'Primary', 5),
        peer: side('backup', 'Secondary', 50),
      },
      'self',
      { violent: true },
    ],
    [
      '1pri call-pri-lost-after-sb on a Primary victim',
      {
        policy: policy('discard-least-changes', 'call-pri-lost-after-sb'),
        self: side('master', 'Primary', 5),
        peer: side('backup', 'Secondary', 50),
      },
      'self',
      { callPriLost: true },
    ],
    [
      '2pri disconnect',
      {
        policy: policy('discard-least-changes', 'disconnect', 'disconnect'),
        self: side('master', 'Primary', 5),
        peer: side('backup', 'Primary', 50),
      },
      undefined,
      {},
    ],
    [
      '2pri violently-as0p',
      {
        policy: policy('discard-least-changes', 'disconnect', 'violently-as0p'),
        self: side('master', 'Primary', 5),
        peer: side('backup', 'Primary', 50),
      },
      'self',
      { violent: true },
    ],
  ])('%s', (_n, input, victim, extra) => {
    const out = resolveSplitBrain(input);
    expect(out.victim).toBe(victim);
    expect(out).toMatchObject(extra);
    // The peer evaluates the same situation from its side and must agree.
    const theirs = resolveSplitBrain({ policy: input.policy, self: input.peer, peer: input.self });
    expect(theirs.victim).toBe(mirror(out));
  });
});
