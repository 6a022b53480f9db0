// Automatic split-brain recovery: DRBD's after-sb-0pri/1pri/2pri policies as
// one pure function. Both nodes evaluate it with mirrored inputs and must reach
// mirrored answers, so every rule is stated in terms of "self" and "peer" and
// ties either disconnect or break on the node name.
import type { NetOptions } from '../api/config.ts';

export interface SplitBrainSide {
  name: string;
  role: 'Primary' | 'Secondary';
  /** Blocks this side changed since the split (its own bitmap's count). */
  changes: number;
  /** This side was Primary when the link was lost (so it is the "older" primary). */
  primaryAtSplit: boolean;
}

export interface SplitBrainInput {
  policy: Pick<NetOptions, 'afterSb0pri' | 'afterSb1pri' | 'afterSb2pri'>;
  self: SplitBrainSide;
  peer: SplitBrainSide;
}

export interface SplitBrainOutcome {
  /** Whose changes are discarded; undefined = no automatic recovery (disconnect). */
  victim: 'self' | 'peer' | undefined;
  /** The victim is Primary and the policy says to demote it by force ("violently"). */
  violent: boolean;
  /** Run the pri-lost-after-sb handler on the victim Primary instead of resyncing. */
  callPriLost: boolean;
  rule: string;
}

const none = (rule: string): SplitBrainOutcome => ({ victim: undefined, violent: false, callPriLost: false, rule });
const pick = (victim: 'self' | 'peer', rule: string): SplitBrainOutcome => ({
  victim,
  violent: false,
  callPriLost: false,
  rule,
});

/** after-sb-0pri, also the base that the 1pri/2pri policies fall back to. */
export function zeroPrimaries(i: SplitBrainInput): SplitBrainOutcome {
  const p = i.policy.afterSb0pri;
  const { self, peer } = i;
  switch (p) {
    case 'disconnect':
      return none('after-sb-0pri disconnect');
    case 'discard-local':
      return pick('self', 'after-sb-0pri discard-local');
    case 'discard-remote':
      return pick('peer', 'after-sb-0pri discard-remote');
    case 'discard-younger-primary':
    case 'discard-older-primary': {
      if (self.primaryAtSplit === peer.primaryAtSplit)
        return none(`${p}: cannot tell which node was Primary before the split`);
      const younger = self.primaryAtSplit ? 'peer' : 'self';
      return pick(
        p === 'discard-younger-primary' ? younger : younger === 'self' ? 'peer' : 'self',
        `after-sb-0pri ${p}`,
      );
    }
    case 'discard-zero-changes': {
      if (self.changes === 0 && peer.changes === 0)
        return pick(self.name > peer.name ? 'self' : 'peer', 'discard-zero-changes: neither side changed anything');
      if (self.changes === 0) return pick('self', 'discard-zero-changes: we changed nothing');
      if (peer.changes === 0) return pick('peer', 'discard-zero-changes: the peer changed nothing');
      return none(`discard-zero-changes: both sides changed data (${self.changes} and ${peer.changes} blocks)`);
    }
    case 'discard-least-changes': {
      if (self.changes === peer.changes) return none(`discard-least-changes: both changed ${self.changes} blocks`);
      return pick(
        self.changes < peer.changes ? 'self' : 'peer',
        `discard-least-changes: ${self.changes} vs ${peer.changes} blocks`,
      );
    }
    default: {
      const node = p.slice('discard-node-'.length);
      if (node === self.name) return pick('self', `after-sb-0pri ${p}`);
      if (node === peer.name) return pick('peer', `after-sb-0pri ${p}`);
      return none(`${p}: no node named '${node}' in this pair`);
    }
  }
}

export function resolveSplitBrain(i: SplitBrainInput): SplitBrainOutcome {
  const primaries = (i.self.role === 'Primary' ? 1 : 0) + (i.peer.role === 'Primary' ? 1 : 0);
  if (primaries === 0) return zeroPrimaries(i);
  const base = zeroPrimaries(i);
  const victimRole = base.victim === 'self' ? i.self.role : base.victim === 'peer' ? i.peer.role : undefined;
  if (primaries === 1) {
    switch (i.policy.afterSb1pri) {
      case 'disconnect':
        return none('after-sb-1pri disconnect');
      case 'consensus':
        return victimRole === 'Secondary'
          ? { ...base, rule: `after-sb-1pri consensus (${base.rule})` }
          : none(`after-sb-1pri consensus: ${base.victim ? 'the 0pri policy would discard the Primary' : base.rule}`);
      case 'discard-secondary':
        return pick(i.self.role === 'Secondary' ? 'self' : 'peer', 'after-sb-1pri discard-secondary');
      case 'call-pri-lost-after-sb':
        if (victimRole === 'Primary')
          return { ...base, callPriLost: true, rule: `after-sb-1pri call-pri-lost-after-sb (${base.rule})` };
        return base.victim ? { ...base, rule: `after-sb-1pri call-pri-lost-after-sb (${base.rule})` } : base;
      case 'violently-as0p':
        return { ...base, violent: victimRole === 'Primary', rule: `after-sb-1pri violently-as0p (${base.rule})` };
    }
  }
  switch (i.policy.afterSb2pri) {
    case 'disconnect':
      return none('after-sb-2pri disconnect');
    case 'violently-as0p':
      return { ...base, violent: base.victim !== undefined, rule: `after-sb-2pri violently-as0p (${base.rule})` };
    case 'call-pri-lost-after-sb':
      return {
        ...base,
        callPriLost: base.victim !== undefined,
        rule: `after-sb-2pri call-pri-lost-after-sb (${base.rule})`,
      };
  }
}
