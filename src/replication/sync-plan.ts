// What a pair does when it connects, as one pure function. Each side sends its
// PARAMS and computes the plan from (what it sent, what it received); the rules
// are stated so that the two sides reach mirrored plans without a third message
// (a fast-check property in sync-plan.test.ts checks it). In order:
//   1. the protocols must match;
//   2. the device size: the smaller disk, never below a size the device had;
//   3. the data: generation identifiers (uuids.ts compareUuids), refined for a
//      crashed Primary, an interrupted resync and blocks online verify marked;
//   4. `invalidate` / `invalidate-remote` override the data rule;
//   5. a split brain is resolved by `--discard-my-data` or the after-sb policies,
//      or the connection is refused;
//   6. refusals: two Primaries without allow-two-primaries, unrelated data, a
//      Primary that would have to become SyncTarget.
import type { NetOptions } from '../api/config.ts';
import type { Params } from './messages.ts';
import { resolveSplitBrain } from './split-brain.ts';
import type { DiskState } from './states.ts';
import { compareUuids, uuidsFromJson, type SyncDecision } from './uuids.ts';

export interface PlanContext {
  /** The after-sb policies. */
  policy: Pick<NetOptions, 'afterSb0pri' | 'afterSb1pri' | 'afterSb2pri'>;
  /** discarded-data-dir is not `none`: a target that loses its own changes keeps a copy. */
  keepsDiscarded: boolean;
}

export type SyncRole = 'none' | 'source' | 'target';

/** Who picked the victim of a split brain. */
export type VictimChoice = { victim: 'self' | 'peer'; by: 'discard-my-data' | 'after-sb policy' };

export type ConnectPlan =
  | {
      kind: 'refuse';
      reason: string;
      decision?: SyncDecision;
      rule?: string;
      splitBrain: boolean;
      /** after-sb-1pri call-pri-lost-after-sb: this Primary was chosen as the victim. */
      callPriLost: boolean;
    }
  | {
      /** after-sb violently-as0p: this Primary is the victim; demote it by force and come back discarding its data. */
      kind: 'demote-victim';
      reason: string;
      decision: SyncDecision;
      rule: string;
    }
  | {
      /** Drop this connection and wait for the next: the peer's Primary demotes itself by force (a split-brain victim), or has no disk. */
      kind: 'retry';
      reason: string;
      decision: SyncDecision;
      rule: string;
      splitBrain: boolean;
    }
  | {
      kind: 'sync';
      decision: SyncDecision;
      rule: string;
      role: SyncRole;
      full: boolean;
      /** The agreed device size, bytes. */
      size: number;
      /** The device grew from this size; the new area is synced. */
      grownFrom: number | undefined;
      /** Disk states once connected (with no resync: the final ones). */
      disk: DiskState;
      peerDisk: DiskState;
      splitBrain: VictimChoice | undefined;
      /** A target that overwrites changes of its own saves them first (split-brain victim, or bits of its own). */
      saveDiscarded: boolean;
    };

const consistent = (d: DiskState): boolean => d === 'UpToDate' || d === 'Consistent';
const hasDisk = (d: DiskState): boolean =>
  d === 'UpToDate' || d === 'Consistent' || d === 'Outdated' || d === 'Inconsistent';
/** Data that may be copied to the peer: consistent, if perhaps old. */
const canSource = (d: DiskState): boolean => consistent(d) || d === 'Outdated';

/** The Primary goes first; between two Secondaries (or two Primaries) `tie` decides, which the peer computes mirrored. */
function weLead(mine: Params, peer: Params, tie: boolean): boolean {
  if (mine.role === 'Primary' && peer.role !== 'Primary') return true;
  if (peer.role === 'Primary' && mine.role !== 'Primary') return false;
  return tie;
}

/** Decides how to connect; `mine` is what this side sent, `peer` what it received. */
export function planConnect(mine: Params, peer: Params, ctx: PlanContext): ConnectPlan {
  const refuse = (reason: string, extra: Partial<Extract<ConnectPlan, { kind: 'refuse' }>> = {}): ConnectPlan => ({
    kind: 'refuse',
    reason,
    splitBrain: false,
    callPriLost: false,
    ...extra,
  });
  if (peer.protocol !== mine.protocol)
    return refuse(`incompatible communication protocols: ours ${mine.protocol}, peer ${peer.protocol}`);
  // Two disks or nothing: a side whose disk failed (or is detached) has no data to offer and
  // takes none; it comes back with `attach` (a restart). The side with a disk keeps trying.
  if (!hasDisk(mine.disk)) return refuse(`no local disk (${mine.disk}): attach it before connecting`);
  if (!hasDisk(peer.disk))
    return {
      kind: 'retry',
      reason: `the peer has no disk (${peer.disk})`,
      decision: 'none',
      rule: 'the peer has no disk',
      splitBrain: false,
    };

  // 2. Size: the smaller disk; never below a size the device already had.
  const agreedLa = Math.max(mine.laSize, peer.laSize);
  const fits = Math.min(mine.capacity, peer.capacity);
  if (agreedLa > 0 && fits < agreedLa)
    return refuse(`The peer's disk size is too small! (${fits} < ${agreedLa} bytes)`);
  const resizing = mine.resize || peer.resize;
  const size = agreedLa > 0 && !resizing ? agreedLa : fits;
  const grownFrom = resizing && agreedLa > 0 && size > agreedLa ? agreedLa : undefined;

  // 3. The data.
  let { decision, rule } = compareUuids(uuidsFromJson(mine.uuids), uuidsFromJson(peer.uuids));
  if (decision === 'none' && mine.disk === 'Inconsistent' && canSource(peer.disk)) {
    decision = 'bitmap-target';
    rule = 'same generation, our disk is Inconsistent (interrupted resync or invalidate)';
  } else if (decision === 'none' && peer.disk === 'Inconsistent' && canSource(mine.disk)) {
    decision = 'bitmap-source';
    rule = "same generation, the peer's disk is Inconsistent (interrupted resync or invalidate)";
  } else if (decision === 'none' && (mine.crashedPrimary || peer.crashedPrimary)) {
    // A Primary stopped uncleanly and the pair meets again in the same generation: the
    // blocks of its activity log's extents may differ between the disks. The copy to keep
    // is the one on the machine that kept its page cache: a process crash loses nothing the
    // application was told was written, a reboot or power loss loses what was not yet
    // durable (cacheLost). The generation did not change, so every write the Primary
    // acknowledged reached the peer too (under protocol C; under A/B the Primary's is the
    // fuller copy unless it lost its cache). When both or neither lost their cache, the
    // crashed Primary's version goes over (DRBD's rule 40); both crashed: the lower name's.
    const oneLost = mine.cacheLost !== peer.cacheLost;
    const keeper = mine.cacheLost ? peer : mine;
    if (oneLost && canSource(keeper.disk)) {
      decision = mine.cacheLost ? 'bitmap-target' : 'bitmap-source';
      rule = `${mine.crashedPrimary ? 'we' : 'the peer'} crashed while Primary; ${mine.cacheLost ? 'our' : "the peer's"} machine restarted and lost unflushed writes, ${mine.cacheLost ? 'the peer' : 'we'} did not`;
    } else {
      const sole = mine.crashedPrimary !== peer.crashedPrimary;
      const weSource = sole ? mine.crashedPrimary : mine.node < peer.node;
      decision = weSource ? 'bitmap-source' : 'bitmap-target';
      rule = sole ? `${mine.crashedPrimary ? 'we' : 'the peer'} crashed while Primary` : 'both crashed while Primary';
    }
  } else if (decision === 'none' && consistent(mine.disk) && consistent(peer.disk) && mine.changes + peer.changes > 0) {
    // Blocks marked out of sync with the generation unchanged (online verify, or writes a
    // Secondary had not made durable when the link dropped): the copy on a machine that
    // restarted since it took writes may lack some (cacheLost), so the other one goes over
    // (seed 17147: a lower node name overwrote acknowledged writes its power loss had
    // taken); else the Primary's version wins, else the lower node name's.
    const oneLost = mine.cacheLost !== peer.cacheLost;
    const weSource = oneLost ? !mine.cacheLost : weLead(mine, peer, mine.node < peer.node);
    decision = weSource ? 'bitmap-source' : 'bitmap-target';
    rule = oneLost
      ? `same generation, ${mine.changes + peer.changes} blocks marked out of sync; ${mine.cacheLost ? 'our' : "the peer's"} machine restarted and may have lost unflushed writes`
      : `same generation, ${mine.changes + peer.changes} blocks marked out of sync (verify)`;
  }

  // 4. invalidate / invalidate-remote.
  const weTarget = mine.invalidate === 'self' || peer.invalidate === 'peer';
  const peerTarget = peer.invalidate === 'self' || mine.invalidate === 'peer';
  if (weTarget && peerTarget)
    return refuse('both nodes asked for the same full resync in opposite directions (invalidate); refusing');
  if (weTarget) {
    decision = 'full-target';
    rule = mine.invalidate === 'self' ? 'invalidate' : 'invalidate-remote on the peer';
  } else if (peerTarget) {
    decision = 'full-source';
    rule = mine.invalidate === 'peer' ? 'invalidate-remote' : 'invalidate on the peer';
  }

  // 5. Split brain.
  let splitBrain: VictimChoice | undefined;
  if (decision === 'split-brain' || decision === 'split-brain-unrelated') {
    const full = decision === 'split-brain-unrelated';
    const sbRule = rule;
    if (mine.discardMyData && peer.discardMyData)
      return refuse('Split-Brain detected and both sides want to discard their data; refusing', {
        decision,
        rule,
        splitBrain: true,
      });
    const halfOverwritten = mine.disk === 'Inconsistent' ? 'self' : peer.disk === 'Inconsistent' ? 'peer' : undefined;
    if (halfOverwritten !== undefined && (mine.disk === 'Inconsistent') !== (peer.disk === 'Inconsistent')) {
      // One side is Inconsistent: an earlier recovery was overwriting it when it stopped. It is
      // the victim again, whatever the policies say: its data is no longer a whole version.
      splitBrain = { victim: halfOverwritten, by: 'after-sb policy' };
      rule = `split brain resolved: ${halfOverwritten === 'self' ? 'our' : "the peer's"} disk is Inconsistent from an earlier recovery (${sbRule})`;
    } else if (mine.discardMyData || peer.discardMyData) {
      splitBrain = { victim: mine.discardMyData ? 'self' : 'peer', by: 'discard-my-data' };
      rule = `split brain resolved: ${mine.discardMyData ? 'we discard our' : 'the peer discards its'} data (${sbRule})`;
    } else {
      const out = resolveSplitBrain({
        policy: ctx.policy,
        self: { name: mine.node, role: mine.role, changes: mine.changes, primaryAtSplit: mine.primaryAtSplit },
        peer: { name: peer.node, role: peer.role, changes: peer.changes, primaryAtSplit: peer.primaryAtSplit },
      });
      if (!out.victim)
        return refuse(`Split-Brain detected but unresolved, dropping connection! (${sbRule}; ${out.rule})`, {
          decision,
          rule: `${sbRule}; ${out.rule}`,
          splitBrain: true,
        });
      if (out.victim === 'self' && mine.role === 'Primary') {
        if (out.violent)
          return {
            kind: 'demote-victim',
            reason: `split brain: demoting this Primary by force (${out.rule})`,
            decision,
            rule: `${sbRule}; ${out.rule}`,
          };
        return refuse(
          `Split-Brain detected; this Primary would be the victim (${out.rule}); staying Primary and disconnecting`,
          {
            decision,
            rule: `${sbRule}; ${out.rule}`,
            splitBrain: true,
            callPriLost: out.callPriLost,
          },
        );
      }
      if (out.victim === 'peer' && peer.role === 'Primary') {
        // The mirror of the case above: the peer demotes itself and comes back, or refuses.
        if (out.violent)
          return {
            kind: 'retry',
            reason: `split brain: the peer's Primary is the victim and demotes itself (${out.rule})`,
            decision,
            rule: `${sbRule}; ${out.rule}`,
            splitBrain: true,
          };
        return refuse(`Split-Brain detected; the peer's Primary is the victim (${out.rule}); disconnecting`, {
          decision,
          rule: `${sbRule}; ${out.rule}`,
          splitBrain: true,
        });
      }
      splitBrain = { victim: out.victim, by: 'after-sb policy' };
      rule = `split brain resolved automatically: ${out.rule} (${sbRule})`;
    }
    decision =
      splitBrain.victim === 'self' ? (full ? 'full-target' : 'bitmap-target') : full ? 'full-source' : 'bitmap-source';
  }

  // 6. Refusals.
  if (
    decision === 'none' &&
    peer.role === 'Primary' &&
    mine.role === 'Primary' &&
    !(peer.allowTwoPrimaries && mine.allowTwoPrimaries)
  )
    return refuse('both nodes are Primary and allow-two-primaries is not set on both; refusing to connect');
  if (decision === 'unrelated-data') return refuse(`Unrelated data, aborting! (${rule})`, { decision, rule });

  // The device grew: the new area holds whatever the disks had; it is synced from the
  // Primary (or, with none, from the node that asked for the resize).
  if (grownFrom !== undefined && decision === 'none') {
    const weSource = weLead(mine, peer, mine.resize !== peer.resize ? mine.resize : mine.node < peer.node);
    decision = weSource ? 'bitmap-source' : 'bitmap-target';
    rule = `grown from ${grownFrom} to ${size} bytes: the new area is synced`;
  }

  const role: SyncRole =
    decision === 'bitmap-source' || decision === 'full-source'
      ? 'source'
      : decision === 'bitmap-target' || decision === 'full-target'
        ? 'target'
        : 'none';
  if (role === 'target' && mine.role === 'Primary')
    return refuse(`I shall become SyncTarget, but I am primary! (${rule})`, { decision, rule });
  if (role === 'source' && peer.role === 'Primary')
    return refuse(`The peer would become SyncTarget, but it is primary! (${rule})`, { decision, rule });
  // Only a disk with consistent data can be copied (DRBD: "I shall become SyncSource, but I am inconsistent!").
  if (role === 'source' && !canSource(mine.disk))
    return refuse(`I shall become SyncSource, but my disk is ${mine.disk}! (${rule})`, { decision, rule });
  if (role === 'target' && !canSource(peer.disk))
    return refuse(`The peer would become SyncSource, but its disk is ${peer.disk}! (${rule})`, { decision, rule });

  let disk = mine.disk;
  let peerDisk = peer.disk;
  if (role === 'none') {
    // Same generation: identical data. A Consistent/Outdated disk next to an UpToDate
    // one of the same generation is UpToDate too; two Consistent ones as well.
    const same = (d: DiskState): DiskState =>
      (d === 'Consistent' && (consistent(peer.disk) || consistent(mine.disk))) ||
      (d === 'Outdated' && (peer.disk === 'UpToDate' || mine.disk === 'UpToDate'))
        ? 'UpToDate'
        : d;
    disk = same(mine.disk);
    peerDisk = same(peer.disk);
  } else if (role === 'source') {
    // DRBD clamps a sync source's disk to UpToDate: the generation identifiers have just
    // named its data the newer copy (a node that came up alone is only Consistent until then).
    if (disk === 'Consistent' || disk === 'Outdated') disk = 'UpToDate';
    peerDisk = 'Inconsistent';
  } else if (role === 'target') {
    disk = 'Inconsistent';
    if (peerDisk === 'Consistent' || peerDisk === 'Outdated') peerDisk = 'UpToDate';
  }
  const discardsOwn = role === 'target' && (splitBrain?.victim === 'self' || mine.changes > 0);
  return {
    kind: 'sync',
    decision,
    rule,
    role,
    full: decision === 'full-source' || decision === 'full-target',
    size,
    grownFrom,
    disk,
    peerDisk,
    splitBrain,
    saveDiscarded: discardsOwn && ctx.keepsDiscarded,
  };
}

/** The plan the peer makes from the same two PARAMS, as this side names things. */
export function mirrorDecision(d: SyncDecision): SyncDecision {
  switch (d) {
    case 'bitmap-source':
      return 'bitmap-target';
    case 'bitmap-target':
      return 'bitmap-source';
    case 'full-source':
      return 'full-target';
    case 'full-target':
      return 'full-source';
    default:
      return d;
  }
}
