// One seeded run: the cluster comes up, the volume becomes Ready, then `rounds`
// rounds of the failover suites' faults (picked and timed from the seed), each
// followed by the e2e's heal and a wait for the volume to be Ready again. The
// invariants (invariants.ts) are checked at every step; a round that does not
// come back to Ready in time fails too. The same seed replays the same run.
import { Invariants } from './invariants.ts';
import { NODES, type NodeName, NS, RESOURCE, VOLUME, World } from './world.ts';

export const FAULTS = [
  'stop-primary',
  'stop-secondary',
  'partition-primary',
  'partition-secondary',
  'cut-link',
  'cut-api-primary',
  'cut-api-secondary',
  'cut-api-then-link',
  'kill-controller',
  'cut-controller-api',
  'controller-cut-primary-alone',
  'restart-agent-primary',
  'restart-agent-secondary',
  'restart-both-agents',
  'stall-watches',
  'switch-primary',
  'failover-suite',
] as const;
export type Fault = (typeof FAULTS)[number];

export type RunResult = {
  seed: number;
  rounds: number;
  /** The round the first violation happened in (0: during setup). */
  failedRound?: number;
  violations: string[];
  trace: string[];
  faults: Fault[];
  simSeconds: number;
  steps: number;
  roleChanges: number;
};

/** How long a round waits for the volume to be Ready again after the heal (virtual). */
export const SETTLE_MS = 240_000;

const other = (n: NodeName): NodeName => (n === 'master' ? 'backup' : 'master');

type Rv = {
  metadata: { generation?: number };
  status?: {
    primary?: string;
    conditions?: { type: string; status: string; message: string; observedGeneration?: number }[];
  };
};

export async function runSeed(
  seed: number,
  rounds: number,
  o: { faults?: readonly Fault[]; keepGoing?: boolean } = {},
): Promise<RunResult> {
  const w = new World(seed);
  const inv = new Invariants(w);
  const r = w.rng;
  const faults: Fault[] = [];
  let failedRound: number | undefined;
  let round = 0;
  const bad = () => !o.keepGoing && inv.violations.length > 0;
  const run = async (ms: number) => {
    await w.s.runUntil(w.s.t + ms, bad);
  };
  const ready = (): { ok: boolean; primary?: string; why: string } => {
    const rv = w.api.peek('rv', NS, VOLUME) as Rv | undefined;
    const c = rv?.status?.conditions?.find((x) => x.type === 'Ready');
    const primary = rv?.status?.primary;
    const e = primary ? w.pair.engines.get(primary) : undefined;
    // As the e2e's waitReady sees it, and true on the nodes: both engines Connected and
    // UpToDate, both agents running, the Primary's engine taking writes.
    const whole = [...w.pair.engines.values()].every((x) => x.cstate === 'Connected' && x.disk === 'UpToDate');
    const ok =
      c?.status === 'True' &&
      c.observedGeneration === rv?.metadata.generation &&
      e?.writable === true &&
      whole &&
      NODES.every((n) => w.agents.has(n));
    return { ok, ...(primary ? { primary } : {}), why: c ? `${c.status}: ${c.message}` : 'no Ready condition' };
  };
  /** Waits until Ready with a writable Primary; a violation if it does not come. */
  const settle = async (what: string): Promise<string | undefined> => {
    const until = w.s.t + SETTLE_MS;
    await run(5_000);
    while (w.s.t < until && !bad()) {
      const st = ready();
      if (st.ok) {
        w.log(`check: Ready with ${st.primary} Primary (${what})`);
        return st.primary;
      }
      await run(1000);
    }
    if (!bad()) {
      w.log(`VIOLATION: not Ready ${SETTLE_MS / 1000} s after ${what}`);
      inv.violations.push(`not Ready ${SETTLE_MS / 1000} s after ${what}: ${ready().why}`);
    }
    return undefined;
  };

  w.setup();
  let primary = await settle('the volume was created');
  for (round = 1; round <= rounds && !bad() && primary; round++) {
    const p = primary as NodeName;
    const s = other(p);
    const fault = r.pick(o.faults ?? FAULTS);
    faults.push(fault);
    w.log(`--- round ${round}: ${fault} (Primary ${p})`);
    switch (fault) {
      case 'stop-primary':
      case 'stop-secondary': {
        const n = fault === 'stop-primary' ? p : s;
        w.stopNode(n);
        await run(r.int(5_000, 40_000));
        w.startNode(n);
        break;
      }
      case 'partition-primary':
      case 'partition-secondary':
        w.partition(fault === 'partition-primary' ? p : s, true);
        await run(r.int(5_000, 40_000));
        w.partition(fault === 'partition-primary' ? p : s, false);
        break;
      case 'cut-link':
        w.cutLink(true);
        await run(r.int(1_000, 20_000));
        w.cutLink(false);
        break;
      case 'cut-api-primary':
      case 'cut-api-secondary': {
        const n = fault === 'cut-api-primary' ? p : s;
        w.cutApi(n, true);
        await run(r.int(2_000, 40_000));
        w.cutApi(n, false);
        break;
      }
      case 'cut-api-then-link':
        // failover.test.ts: the agents cut from the API server, then the link as well.
        w.cutApi(p, true);
        await run(r.int(2_000, 30_000));
        w.cutLink(true);
        await run(r.int(5_000, 40_000));
        w.cutLink(false);
        await run(r.int(0, 3_000));
        w.cutApi(p, false);
        break;
      case 'kill-controller':
        w.killController();
        await run(r.int(500, 15_000));
        w.startController();
        break;
      case 'cut-controller-api':
        w.cutControllerApi(true);
        await run(r.int(2_000, 30_000));
        w.cutControllerApi(false);
        w.startController();
        break;
      case 'controller-cut-primary-alone':
        // failover.test.ts: the controller cut off, the link fails (the Primary fences its peer
        // and writes on alone), then the Primary's node stops; after the heal nothing may
        // promote the fenced node.
        w.cutControllerApi(true);
        w.cutLink(true);
        await run(r.int(5_000, 20_000));
        w.stopNode(p);
        await run(r.int(5_000, 20_000));
        w.cutControllerApi(false);
        w.startController();
        await run(r.int(5_000, 20_000));
        w.startNode(p);
        w.cutLink(false);
        break;
      case 'restart-agent-primary':
      case 'restart-agent-secondary': {
        const n = fault === 'restart-agent-primary' ? p : s;
        w.killAgent(n);
        await run(r.int(200, 15_000));
        w.startAgent(n);
        break;
      }
      case 'restart-both-agents':
        // healEverything: each agent stopped and started again, one after the other.
        for (const n of NODES) {
          w.killAgent(n);
          await run(r.int(200, 12_000));
          w.startAgent(n);
          await run(r.int(100, 3_000));
        }
        break;
      case 'stall-watches':
        for (let k = r.int(1, 4); k > 0; k--) {
          w.stallWatch(
            r.pick([
              'controller-volumes',
              'controller-replicas',
              'controller-nodes',
              'agent-master',
              'agent-backup',
            ] as const),
            r.int(500, 30_000),
          );
          await run(r.int(0, 5_000));
        }
        break;
      case 'switch-primary':
        w.setPreferred(r.chance(0.8) ? s : undefined);
        break;
      case 'failover-suite': {
        // test/e2e/failover.test.ts, its first three tests back to back, each ended by
        // healEverything (both agents restarted, one after the other).
        const healEverything = async () => {
          w.healAll();
          for (const n of NODES) {
            w.killAgent(n);
            await run(r.int(1_000, 12_000));
            w.startAgent(n);
          }
        };
        // 1. stop the Primary's node; the other takes over; the node boots, its agent starts.
        w.stopNode(p);
        await run(r.int(20_000, 40_000));
        w.startNode(p);
        await settle('the stopped Primary came back');
        await healEverything();
        // 2. partition the new Primary; the other side is promoted; heal.
        w.partition(s, true);
        await run(r.int(20_000, 40_000));
        w.partition(s, false);
        await settle('the partition healed');
        await healEverything();
        // 3. cut the Primary's agent from the API, then the link; heal the link, then the API.
        w.cutApi(p, true);
        await run(r.int(10_000, 30_000));
        w.cutLink(true);
        await run(r.int(20_000, 40_000));
        w.cutLink(false);
        await run(r.int(0, 2_000));
        w.cutApi(p, false);
        await settle('the agent and the link came back');
        await healEverything();
        break;
      }
    }
    // Now and then a second, independent trouble in the middle of the heal.
    if (r.chance(0.3)) {
      const extra = r.pick(['stall', 'restart-agent', 'kill-controller'] as const);
      if (extra === 'stall')
        w.stallWatch(
          r.pick(['controller-volumes', 'controller-replicas', 'agent-master', 'agent-backup'] as const),
          r.int(500, 20_000),
        );
      else if (extra === 'restart-agent') {
        const n = r.pick(NODES);
        w.killAgent(n);
        await run(r.int(200, 12_000));
        w.startAgent(n);
      } else {
        w.killController();
        await run(r.int(200, 5_000));
        w.startController();
      }
    }
    w.healAll();
    primary = await settle(`round ${round} (${fault})`);
    if (primary) await run(r.int(0, 5_000));
  }
  if (inv.violations.length > 0) failedRound = round - 1;
  return {
    seed,
    rounds: Math.min(rounds, round - 1),
    ...(failedRound !== undefined ? { failedRound } : {}),
    violations: inv.violations,
    trace: w.trace,
    faults,
    simSeconds: w.s.t / 1000,
    steps: w.s.steps,
    roleChanges: inv.roleChanges.length,
  };
}

export { RESOURCE };
