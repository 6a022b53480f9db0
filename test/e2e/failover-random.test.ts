// Randomized faults against a replicated volume under a write stream (Jepsen in
// spirit): a client writes numbered records on the Primary's filesystem and keeps
// the list of acknowledged ones; the harness stops, starts, partitions and heals
// nodes, cuts the replication link, and kills the controller and the agents, at
// random from a seed. At the end every acknowledged record must be readable on the
// Primary, and no writer may have been acknowledged after a writer on another node
// had been (two nodes never accepted writes at once).
//
// tandem runs as the chart's pods (helm install with the image built here): a node
// stopped whole takes its agent, engine host and perhaps the acting controller with it,
// and "kill" is SIGKILL of a pod's main process, which its kubelet restarts.
// TANDEM_E2E_DEPLOY=processes runs it against the host-process shortcut instead.
//
//   TANDEM_FAILOVER_ROUNDS=100 TANDEM_FAILOVER_SEED=7 npm run test:e2e -- --testPathPatterns failover-random
import { jest } from '@jest/globals';
import { setTimeout as sleep } from 'node:timers/promises';
import { external, kubectl, useCluster } from './lib/cluster.ts';
import {
  agentBack,
  controllerBack,
  installTandem,
  killAgent,
  killLeader,
  leaseHolder,
  onPods,
  pods,
  removeTandem,
} from './lib/chart.ts';
import { eventually } from './lib/eventually.ts';
import { cutLink, healEverything, healLink, nodeAction, RecordWriter, recordsOn } from './lib/failover.ts';
import { execInNode } from './lib/nodes.ts';
import { watchRoles } from './lib/role-watch.ts';
import { deploy, getRv, readyCondition, waitReady } from './lib/volumes.ts';

const rounds = Number(process.env.TANDEM_FAILOVER_ROUNDS ?? 12);
const seed = Number(process.env.TANDEM_FAILOVER_SEED ?? 20261125);
jest.setTimeout(120_000 + rounds * 60_000);
const describeLocal = external ? describe.skip : describe;
useCluster();
const ns = `e2e-random-${process.pid}`;
const mount = '/mydata/rnd';
const nodes = ['master', 'backup'] as const;
const other = (n: string) => (n === 'master' ? 'backup' : 'master');

const FAULTS = [
  'stop-primary',
  'partition-primary',
  'stop-secondary',
  'partition-secondary',
  'cut-link',
  'kill-controller',
  'kill-agent-primary',
  'kill-agent-secondary',
] as const;
type Fault = (typeof FAULTS)[number];

function rng(s: number): () => number {
  let x = s >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

async function mountedOn(node: string): Promise<void> {
  await eventually(
    async () => expect((await execInNode(node, ['stat', '-f', '-c', '%T', mount])).stdout.trim()).toBe('xfs'),
    { timeoutMs: 60_000, what: `xfs mounted on ${node}` },
  );
}

/** The node the acting controller runs on (pods), for the round's log line. */
async function leaderNode(): Promise<string> {
  if (!onPods) return 'host';
  const holder = await leaseHolder();
  return (await pods('controller')).find((p) => p.metadata.name === holder)?.spec.nodeName ?? '-';
}

describeLocal(
  `randomized faults under a write stream (${rounds} rounds, seed ${seed}, ${onPods ? 'chart pods' : 'host processes'})`,
  () => {
    let port: number | undefined;
    // Every role change has a recorded cause (checked at the end of the run, after the invariants below).
    const roles = watchRoles(ns);

    beforeAll(async () => {
      await installTandem([mount]);
      await kubectl(['create', 'namespace', ns]);
      await roles.start();
      await kubectl(['apply', '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'tandem.dev/v1alpha1',
          kind: 'ReplicatedVolume',
          metadata: { name: 'rnd', namespace: ns },
          spec: {
            pool: 'tutorial',
            protocol: 'C',
            filesystem: 'xfs',
            mountPath: mount,
            replicas: nodes.map((n) => ({ node: n, disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' })),
          },
        }),
      });
      await waitReady(ns, 'rnd', 'master', 180_000);
      port = Number((await getRv(ns, 'rnd')).metadata.annotations?.['tandem.dev/port']);
    }, 300_000);

    afterAll(async () => {
      await healEverything(nodes, port).catch(() => undefined);
      await removeTandem(ns, [mount]);
    }, 300_000);

    test('every acknowledged record survives, and no two nodes ever acknowledge writes at once', async () => {
      const random = rng(seed);
      const pick = <T>(a: readonly T[]): T => a[Math.floor(random() * a.length)]!;
      const pause = () => sleep(2000 + Math.floor(random() * 4000));
      const writers: RecordWriter[] = [];
      const injected: Record<string, number> = {};
      const failovers: number[] = [];
      let primary = 'master';

      const ensureWriter = async (): Promise<RecordWriter> => {
        const w = writers.at(-1);
        if (w && w.node === primary && !w.exited) return w;
        await mountedOn(primary);
        const fresh = new RecordWriter(primary, mount, writers.length * 1_000_000);
        writers.push(fresh);
        return fresh;
      };
      const settle = async (who: string) => {
        await waitReady(ns, 'rnd', who, 180_000);
        primary = who;
      };

      for (let round = 1; round <= rounds; round++) {
        const w = await ensureWriter();
        await w.waitAcks(30);
        const fault: Fault = pick(FAULTS);
        injected[fault] = (injected[fault] ?? 0) + 1;
        const p = primary;
        const s = other(p);
        const leader = await leaderNode();
        const t0 = Date.now();
        const failedOver = async () => {
          await eventually(
            async () => {
              const rv = await getRv(ns, 'rnd');
              // On a timeout the Ready condition says why (FailoverBlocked: …).
              expect({
                primary: rv.status?.primary,
                ...(rv.status?.primary === s ? {} : { ready: readyCondition(rv)?.message }),
              }).toEqual({ primary: s });
            },
            { timeoutMs: 90_000, what: `${s} promoted after ${fault}` },
          );
          primary = s;
          const fresh = await ensureWriter();
          await fresh.waitAcks(1);
          failovers.push(fresh.acks[0]!.t - t0);
        };
        switch (fault) {
          case 'stop-primary':
            await nodeAction('stop', p);
            await failedOver();
            await nodeAction('start', p);
            await agentBack(p);
            await settle(s);
            break;
          case 'partition-primary':
            await nodeAction('partition', p);
            await failedOver();
            await pause();
            await nodeAction('heal', p);
            await settle(s);
            break;
          case 'stop-secondary':
            await nodeAction('stop', s);
            await pause();
            await nodeAction('start', s);
            await agentBack(s);
            await settle(p);
            break;
          case 'partition-secondary':
            await nodeAction('partition', s);
            await pause();
            await nodeAction('heal', s);
            await settle(p);
            break;
          case 'cut-link':
            await cutLink(p, port!);
            await pause();
            await healLink(p, port!);
            await settle(p);
            break;
          case 'kill-controller':
            if (onPods) await killLeader();
            else await deploy('kill', 'controller');
            await pause();
            await controllerBack();
            await settle(p);
            break;
          case 'kill-agent-primary':
          case 'kill-agent-secondary': {
            const n = fault === 'kill-agent-primary' ? p : s;
            if (onPods) await killAgent(n);
            else await deploy('kill', `agent-${n}`);
            await pause();
            await agentBack(n);
            await settle(p);
            break;
          }
        }
        console.log(
          `round ${round}/${rounds}: ${fault} (Primary ${p} → ${primary}, controller on ${leader}) in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${writers.reduce((n, x) => n + x.acks.length, 0)} records acknowledged so far`,
        );
      }

      const last = await ensureWriter();
      await last.waitAcks(10);
      for (const w of writers) await w.stop();

      // Two nodes never acknowledged writes at once: a writer started only after the role
      // moved, so nothing of an earlier writer on another node may be acknowledged after
      // the next one's first acknowledgement.
      const overlaps: string[] = [];
      for (let k = 1; k < writers.length; k++) {
        const first = writers[k]!.acks[0]?.t;
        if (first === undefined) continue;
        for (const e of writers.slice(0, k)) {
          if (e.node === writers[k]!.node) continue;
          const late = e.acks.filter((a) => a.t >= first);
          if (late.length > 0)
            overlaps.push(`${e.node} acknowledged ${late.length} records after ${writers[k]!.node} took writes`);
        }
      }
      const acks = writers.flatMap((x) => x.acks);
      const present = await recordsOn(primary, mount);
      const missing = acks.filter((a) => !present.has(a.i)).map((a) => `${a.node}:${a.i}`);
      console.log(
        `randomized faults (seed ${seed}): ${rounds} rounds; faults ${JSON.stringify(injected)}; ${failovers.length} failovers, ` +
          `worst ${failovers.length ? (Math.max(...failovers) / 1000).toFixed(1) : '-'} s from the fault to the first acknowledged write on the new Primary; ` +
          `${acks.length} records acknowledged by ${writers.length} writers, ${missing.length} missing; ${overlaps.length} overlaps`,
      );
      expect({ missing: missing.slice(0, 20), overlaps }).toEqual({ missing: [], overlaps: [] });
      await roles.check();
      console.log(
        `role changes: ${roles.audit.changes.map((c) => `${c.from ?? '-'}->${c.to}@${c.epoch} ${c.reason}`).join(', ')}`,
      );
    });
  },
);
