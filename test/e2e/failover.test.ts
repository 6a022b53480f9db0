// Automatic failover on the real control plane (issue 6's "Done when"): the
// Primary's node stopped or partitioned in the middle of a write stream, the
// controller and the agents cut from the API server in turn, and a Secondary
// that must not be promoted. An application writes numbered records with O_DSYNC
// on the Primary's filesystem and reports each acknowledged one; every
// acknowledged record must be readable on whichever node is Primary afterwards,
// and no node may acknowledge a write once another has been promoted.
import { jest } from '@jest/globals';
import { setTimeout as sleep } from 'node:timers/promises';
import { external, kubectl, useCluster } from './lib/cluster.ts';
import { agentBack, controllerBack, installTandem, removeTandem } from './lib/chart.ts';
import { eventually } from './lib/eventually.ts';
import {
  controllerGaveUp,
  cutApi,
  cutControllerApi,
  cutLink,
  firstWriteOn,
  healApi,
  healControllerApi,
  healEverything,
  healLink,
  nodeAction,
  nodeReadyTransition,
  RecordWriter,
  recordsOn,
  type Ack,
} from './lib/failover.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Dashboard, dashboardQueries } from '../lib/dashboard.ts';
import { repoRoot } from './harness/paths.ts';
import { AGENT_METRICS_PORT, internalIP, MetricsWatch } from './lib/metrics.ts';
import { Prometheus } from './lib/prometheus.ts';
import { execInNode } from './lib/nodes.ts';
import { watchRoles } from './lib/role-watch.ts';
import { eventReasons, freshDisks, getRv, readyCondition, waitReady } from './lib/volumes.ts';

jest.setTimeout(300_000);
const describeLocal = external ? describe.skip : describe;
useCluster();
const ns = `e2e-failover-${process.pid}`;
const mount = '/mydata/ft';
const nodes = ['master', 'backup'] as const;
let port: number | undefined;
let bases = 0;
const nextBase = () => bases++ * 1_000_000;

function volume(name: string, extra: object = {}): string {
  return JSON.stringify({
    apiVersion: 'tandem.dev/v1alpha1',
    kind: 'ReplicatedVolume',
    metadata: { name, namespace: ns },
    spec: {
      pool: 'tutorial',
      protocol: 'C',
      filesystem: 'xfs',
      mountPath: mount,
      replicas: [
        { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
        { node: 'backup', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
      ],
      ...extra,
    },
  });
}

async function mounted(node: string): Promise<void> {
  await eventually(
    async () => expect((await execInNode(node, ['stat', '-f', '-c', '%T', mount])).stdout.trim()).toBe('xfs'),
    { timeoutMs: 60_000, what: `xfs mounted on ${node}` },
  );
}

/** Every acknowledged record is on `node`; none is missing. */
async function expectAllOn(node: string, acks: readonly Ack[]): Promise<void> {
  const present = await recordsOn(node, mount);
  const missing = acks.filter((a) => !present.has(a.i)).map((a) => a.i);
  expect({ acknowledged: acks.length, missing: missing.slice(0, 20) }).toEqual({
    acknowledged: acks.length,
    missing: [],
  });
}

describeLocal('automatic failover on the local control plane', () => {
  // Every role change has a recorded cause: a failover, the force annotation, never none.
  const roles = watchRoles(ns);

  beforeAll(async () => {
    await installTandem([mount]);
    await kubectl(['create', 'namespace', ns]);
    await roles.start();
    await kubectl(['apply', '-f', '-'], { input: volume('db') });
    await waitReady(ns, 'db', 'master', 180_000);
    port = Number((await getRv(ns, 'db')).metadata.annotations?.['tandem.dev/port']);
    await mounted('master');
  }, 300_000);

  afterEach(async () => {
    await healEverything(nodes, port);
    await roles.check();
  }, 120_000);

  afterAll(async () => {
    await removeTandem(ns, [mount]);
  }, 300_000);

  test("stop the Primary's node mid write stream: the other node takes over by itself with every acknowledged write", async () => {
    const before = await waitReady(ns, 'db', 'master');
    // A real Prometheus scraping both agents, for the dashboard's queries (below).
    const prometheus = await Prometheus.start(
      await Promise.all(nodes.map(async (n) => `${await internalIP(n)}:${AGENT_METRICS_PORT}`)),
    );
    const promStart = Date.now();
    const writer = new RecordWriter('master', mount, nextBase());
    await writer.waitAcks(200);
    // Enough history under the writes for the dashboard's rates over 10 s.
    await eventually(async () => expect(await prometheus.targetsUp()).toBe(2), { what: 'both agents scraped' });
    await sleep(Math.max(0, 20_000 - (Date.now() - promStart)));
    // What a Prometheus scraping the surviving node's agent sees through the failover.
    const metrics = new MetricsWatch('backup', ns, 'db');
    metrics.start();
    await eventually(() => expect(metrics.seen[0]?.states?.role).toBeDefined(), { what: 'first scrape of backup' });
    const t0 = Date.now();
    await nodeAction('stop', 'master');
    const tWrite = await firstWriteOn('backup', mount);
    // The write on backup alone is out of sync until master is back.
    await sleep(3000);
    const tAlone = Date.now();
    const rv = await eventually(
      async () => {
        const r = await getRv(ns, 'db');
        expect(r.status?.primary).toBe('backup');
        return r;
      },
      { timeoutMs: 30_000, what: 'backup chosen' },
    );
    const notReady = await eventually(
      async () => {
        const n = await nodeReadyTransition('master');
        expect(n.status).not.toBe('True');
        return n;
      },
      { timeoutMs: 30_000, what: 'master NotReady' },
    );
    console.log(
      `failover: node stopped → first write on the new Primary ${((tWrite - t0) / 1000).toFixed(1)} s; ` +
        `NotReady mark at +${((notReady.at - t0) / 1000).toFixed(1)} s (first write ${((tWrite - notReady.at) / 1000).toFixed(1)} s after it); ${writer.acks.length} records acknowledged before the stop`,
    );
    expect(tWrite - t0).toBeLessThan(20_000);
    expect(tWrite - notReady.at).toBeLessThan(10_000);
    expect(rv.status?.epoch).toBe((before.status?.epoch ?? 0) + 1);
    expect(rv.status?.lastFailover).toMatchObject({ from: 'master', to: 'backup', epoch: rv.status?.epoch });
    expect(rv.status?.lastRoleChange).toMatchObject({
      from: 'master',
      to: 'backup',
      epoch: rv.status?.epoch,
      reason: 'Failover',
    });
    expect(rv.status?.fence).toMatchObject({ node: 'master', by: 'tandem-controller' });
    await expectAllOn('backup', writer.acks);
    const reasons = await eventReasons(ns, 'db');
    expect(reasons).toEqual(expect.arrayContaining(['FailedOver', 'Fenced', 'Promoted', 'RoleChanged']));

    // The old node boots again: it rejoins as Secondary and resyncs, no manual step, no fail-back.
    await nodeAction('start', 'master');
    await agentBack('master');
    const healed = await waitReady(ns, 'db', 'backup', 120_000);
    expect(healed.status?.epoch).toBe(rv.status?.epoch);
    expect(healed.status?.fence).toBeUndefined();
    expect(await eventReasons(ns, 'db')).toContain('Unfenced');

    // The metrics told the same story: Secondary in a healthy pair, then Primary without
    // its peer at the new epoch, then Primary in a healthy pair again; never a scrape lost.
    await eventually(() => expect(metrics.seen.at(-1)?.states).toMatchObject({ connection: 'Connected' }), {
      what: "backup's metrics Connected again",
    });
    const seen = await metrics.stop();
    console.log(`backup's agent metrics through the failover:\n${metrics.describe(t0)}`);
    expect(seen.filter((e) => e.error)).toEqual([]);
    const healthy = { connection: 'Connected', disk: 'UpToDate', peerDisk: 'UpToDate', suspended: 0 };
    expect(seen[0]?.states).toEqual({ role: 'Secondary', epoch: before.status?.epoch, ...healthy });
    const alone = seen.findIndex((e) => e.states?.role === 'Primary' && e.states.connection !== 'Connected');
    expect(alone).toBeGreaterThan(0);
    expect(seen[alone]?.states).toMatchObject({ epoch: rv.status?.epoch, disk: 'UpToDate' });
    expect(['DUnknown', 'Outdated']).toContain(seen[alone]?.states?.peerDisk);
    expect(seen.at(-1)?.states).toEqual({ role: 'Primary', epoch: rv.status?.epoch, ...healthy });

    // The dashboard (helm/tandem/dashboards) on the same data: every panel's query answers
    // with a number before the stop, while backup is alone, or after the heal; the roles
    // and connections panels tell the same story.
    try {
      const dashboard = JSON.parse(
        readFileSync(join(repoRoot, 'helm/tandem/dashboards/tandem-volumes.json'), 'utf8'),
      ) as Dashboard;
      const queries = dashboardQueries(dashboard, { namespace: ns, volume: 'db', rateInterval: '10s' });
      const notReplicated = queries.find((q) => q.panel === 'Not replicated now')!.expr;
      const count = async (at: number) => Number((await prometheus.query(notReplicated, at))[0]?.value[1]);
      // A fleet count: this volume adds one while backup is alone (other suites' volumes are gone or steady).
      const healthyCount = await count(t0 - 1000);
      expect(await count(tAlone)).toBe(healthyCount + 1);
      // "After the heal" as Prometheus sees it. The status said Connected from the agents'
      // last pass, but Prometheus's last scrape of master (every 1 s, 0.9 s timeout, on a
      // loaded machine) may be older than that pass. Seen once in CI: the count was still 1
      // right after the heal (which series was not printed then; it is now, if it stays).
      const lagging = () => prometheus.query(`tandem_connection_state{namespace="${ns}",state!="Connected"} == 1`);
      const tEnd = await eventually(
        async () => {
          const at = Date.now();
          expect({ count: await count(at), lagging: (await lagging()).map((x) => x.metric) }).toEqual({
            count: healthyCount,
            lagging: [],
          });
          return at;
        },
        { timeoutMs: 30_000, what: 'Prometheus to see the pair Connected again' },
      );
      console.log(`dashboard: Prometheus saw the pair healthy ${((tEnd - t0) / 1000).toFixed(1)} s after the stop`);
      const answered = async (expr: string) => {
        for (const at of [t0 - 1000, tAlone, tEnd])
          if ((await prometheus.query(expr, at)).some((s) => Number.isFinite(Number(s.value[1])))) return true;
        return false;
      };
      const empty: string[] = [];
      for (const q of queries) if (!(await answered(q.expr))) empty.push(`${q.panel}: ${q.expr}`);
      expect(empty).toEqual([]);
      const roleQuery = queries.find((q) => q.panel === 'Role')!.expr;
      const rolesAt = async (at: number) =>
        Object.fromEntries((await prometheus.query(roleQuery, at)).map((s) => [s.metric.node, s.metric.role]));
      expect(await rolesAt(t0 - 1000)).toEqual({ master: 'Primary', backup: 'Secondary' });
      expect(await rolesAt(tAlone)).toEqual({ backup: 'Primary' });
      expect(await rolesAt(tEnd)).toEqual({ master: 'Secondary', backup: 'Primary' });
      console.log(`dashboard: ${queries.length} queries of ${dashboard.panels.length} panels answered`);
    } finally {
      await prometheus.stop();
    }
  });

  test('partition the Primary: it freezes, the other side is promoted, and after heal it rejoins as Secondary with no split brain left', async () => {
    const before = await waitReady(ns, 'db', 'backup');
    await mounted('backup');
    const old = new RecordWriter('backup', mount, nextBase());
    await old.waitAcks(200);
    await nodeAction('partition', 'backup');
    const rv = await eventually(
      async () => {
        const r = await getRv(ns, 'db');
        expect({ primary: r.status?.primary, epoch: r.status?.epoch }).toEqual({
          primary: 'master',
          epoch: (before.status?.epoch ?? 0) + 1,
        });
        return r;
      },
      { timeoutMs: 60_000, what: 'master promoted' },
    );
    expect(rv.status?.fence?.node).toBe('backup');
    await mounted('master');
    const fresh = new RecordWriter('master', mount, nextBase());
    await fresh.waitAcks(50);
    const promotedAt = fresh.acks[0]!.t;
    await sleep(2000);
    await nodeAction('heal', 'backup');
    const healed = await waitReady(ns, 'db', 'master', 120_000);
    await fresh.stop();
    await old.stop();
    // The isolated Primary acknowledged nothing once the other side took writes, and nothing it
    // acknowledged is missing; its frozen write failed and it wrote nothing after the heal.
    const late = old.acks.filter((a) => a.t >= promotedAt);
    console.log(
      `partition: old Primary acknowledged ${old.acks.length} records, the last ${promotedAt - (old.lastAckAt ?? 0)} ms before the new Primary's first; its writer ended with: ${old.error ?? 'no error'}`,
    );
    expect(late).toEqual([]);
    expect(old.error).toBeDefined();
    await expectAllOn('master', [...old.acks, ...fresh.acks]);
    expect(healed.status?.epoch).toBe(rv.status?.epoch);
    const replica = JSON.parse((await kubectl(['get', 'rvr', 'db-backup', '-n', ns, '-o', 'json'])).stdout) as {
      status: { conditions: { type: string; status: string; message: string }[] };
    };
    expect(replica.status.conditions.find((c) => c.type === 'SplitBrain')).toMatchObject({ status: 'False' });
    // The isolated Primary stayed frozen (it could not record the fence), so it never started
    // a generation of its own: the rejoin is a plain resync from the new Primary, not a split
    // brain it must resolve by discarding its own changes (engine: the generation waits for
    // the thaw, seed 26381).
    const reasons = await eventReasons(ns, 'db-backup');
    expect(reasons).toContain('Superseded');
    expect(reasons).not.toContain('DiscardingOwnChanges');
    // On the old Primary the mount path is a read-only placeholder now: nothing lands beside the volume.
    expect((await execInNode('backup', ['findmnt', '-n', '-o', 'SOURCE', mount])).stdout.trim()).toBe(
      'tandem-not-primary',
    );
  });

  test('the agents cut from the API server: no failover while the pair replicates; with the link cut too, the Primary freezes unfenced and the other side takes over', async () => {
    const before = await waitReady(ns, 'db', 'master');
    const writer = new RecordWriter('master', mount, nextBase());
    await writer.waitAcks(100);
    await cutApi('master');
    // The Node goes NotReady and the agent falls silent, but backup still sees master on the wire.
    await eventually(
      async () =>
        expect(readyCondition(await getRv(ns, 'db'))).toMatchObject({ status: 'False', reason: 'FailoverBlocked' }),
      { timeoutMs: 40_000, what: 'failover blocked' },
    );
    const blocked = readyCondition(await getRv(ns, 'db'))!;
    expect(blocked.message).toContain('still Connected to master');
    const acked = writer.acks.length;
    await writer.waitAcks(100); // writes go on: they are replicated
    expect((await getRv(ns, 'db')).status?.primary).toBe('master');
    expect(writer.acks.length).toBeGreaterThan(acked);
    // Now the link as well: master can neither replicate nor fence; it must freeze.
    await cutLink('master', port!);
    const rv = await eventually(
      async () => {
        const r = await getRv(ns, 'db');
        expect({ primary: r.status?.primary, epoch: r.status?.epoch }).toEqual({
          primary: 'backup',
          epoch: (before.status?.epoch ?? 0) + 1,
        });
        return r;
      },
      { timeoutMs: 60_000, what: 'backup promoted' },
    );
    expect(rv.status?.fence?.node).toBe('master');
    await mounted('backup');
    const fresh = new RecordWriter('backup', mount, nextBase());
    await fresh.waitAcks(20);
    await healLink('master', port!);
    await healApi('master');
    await waitReady(ns, 'db', 'backup', 120_000);
    await fresh.stop();
    await writer.stop();
    expect(writer.acks.filter((a) => a.t >= fresh.acks[0]!.t)).toEqual([]);
    await expectAllOn('backup', [...writer.acks, ...fresh.acks]);
  });

  test('the controller cut from the API server: nothing is promoted without it, and after the heal it does not promote a node the Primary fenced meanwhile', async () => {
    await waitReady(ns, 'db', 'backup');
    const writer = new RecordWriter('backup', mount, nextBase());
    await writer.waitAcks(50);
    await cutControllerApi();
    // The replication link fails: backup freezes, its agent records master's fence in the API
    // (the agents still reach it), and backup writes on alone.
    await cutLink('backup', port!);
    await eventually(
      async () => expect((await getRv(ns, 'db')).status?.fence).toMatchObject({ node: 'master', by: 'backup' }),
      { timeoutMs: 30_000, what: 'master fenced by backup' },
    );
    const acked = writer.acks.length;
    await writer.waitAcks(50);
    expect(writer.acks.length).toBeGreaterThan(acked);
    // Now the Primary dies. The controller has lost its Lease and exited (as a pod it would be restarted).
    await nodeAction('stop', 'backup');
    await eventually(async () => expect(await controllerGaveUp()).toBe(true), {
      timeoutMs: 30_000,
      what: 'the controller gives up its Lease',
    });
    await healControllerApi();
    await controllerBack();
    await sleep(15_000);
    const rv = await getRv(ns, 'db');
    // master lacks the writes backup acknowledged alone: it is not promoted.
    expect(rv.status?.primary).toBe('backup');
    expect(readyCondition(rv)).toMatchObject({ status: 'False', reason: 'FailoverBlocked' });
    expect(readyCondition(rv)?.message).toContain('master is fenced');
    expect(rv.status?.replicas?.find((r) => r.node === 'master')?.role).toBe('Secondary');
    // backup boots again: it is still the Primary and holds every acknowledged write.
    await nodeAction('start', 'backup');
    await healLink('backup', port!); // the rules live in the node's network namespace, which a stop keeps
    await agentBack('backup');
    await waitReady(ns, 'db', 'backup', 120_000);
    await mounted('backup');
    await expectAllOn('backup', writer.acks);
    expect((await getRv(ns, 'db')).status?.fence).toBeUndefined();
  });

  test('an Inconsistent Secondary is not promoted when the Primary dies during the initial sync; the status says why and force-primary overrides', async () => {
    await kubectl(['delete', 'rv', 'db', '-n', ns, '--timeout=90s']);
    await freshDisks([mount]);
    await kubectl(['apply', '-f', '-'], { input: volume('slow', { resyncRate: '8Mi' }) });
    await eventually(
      async () => {
        const r = await getRv(ns, 'slow');
        expect(r.status?.replicas?.find((x) => x.node === 'backup')?.connectionState).toBe('SyncTarget');
      },
      { timeoutMs: 120_000, what: 'the initial sync runs' },
    );
    await nodeAction('stop', 'master');
    const blocked = await eventually(
      async () => {
        const c = readyCondition(await getRv(ns, 'slow'));
        expect(c).toMatchObject({ status: 'False', reason: 'FailoverBlocked' });
        return c!;
      },
      { timeoutMs: 40_000, what: 'FailoverBlocked' },
    );
    expect(blocked.message).toMatch(
      /^master is lost \(.*\) but backup's disk is Inconsistent, not UpToDate; not failing over \(to accept the loss: kubectl annotate rv <name> tandem\.dev\/force-primary=backup\)$/,
    );
    await sleep(5000);
    const still = await getRv(ns, 'slow');
    expect(still.status?.primary).toBe('master');
    expect(still.status?.replicas?.find((x) => x.node === 'backup')?.role).toBe('Secondary');
    expect(await eventReasons(ns, 'slow')).toContain('FailoverBlocked');
    // The operator accepts the loss.
    await kubectl(['annotate', 'rv', 'slow', '-n', ns, 'tandem.dev/force-primary=backup']);
    const forced = await eventually(
      async () => {
        const r = await getRv(ns, 'slow');
        expect(r.status?.replicas?.find((x) => x.node === 'backup')?.role).toBe('Primary');
        expect(r.metadata.annotations?.['tandem.dev/force-primary']).toBeUndefined();
        return r;
      },
      { timeoutMs: 60_000, what: 'backup forced Primary' },
    );
    expect(forced.status?.primary).toBe('backup');
    expect(forced.status?.lastFailover).toMatchObject({ from: 'master', to: 'backup' });
    expect(forced.status?.lastRoleChange).toMatchObject({ from: 'master', to: 'backup', reason: 'ForcePrimary' });
    expect(await eventReasons(ns, 'slow')).toContain('FailedOver');
    await nodeAction('start', 'master');
    await agentBack('master');
  });
});
