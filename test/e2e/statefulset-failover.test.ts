// Issue 16 item 3, the acceptance test: a real database on a tandem PVC survives the loss
// of its node. MariaDB (Debian's, image built here) runs as a StatefulSet with
// innodb_flush_log_at_trx_commit=1 on a PVC of the chart's CSI driver; a client on the
// host commits numbered rows in a loop (a row counts once its INSERT returned OK); the
// node running the database is stopped whole (a power cut: kubelet, containerd, every
// container and engine on it die at once). The volume fails over, the controller frees the
// workload (deletes the lost node's pod and VolumeAttachment once the fence is recorded),
// the StatefulSet's pod starts on the other node, and the client commits again. The node
// comes back, resyncs, and the next round stops the other one. At the end every committed
// row is in the table.
//
// Rounds: TANDEM_E2E_DB_ROUNDS (default 2 in `npm test`; the 20:
//   TANDEM_E2E_DB_ROUNDS=20 npx jest --selectProjects e2e --runInBand test/e2e/statefulset-failover.test.ts)
import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { jest } from '@jest/globals';
import { build } from '../../scripts/image/build.ts';
import { importImages } from './harness/images.ts';
import { repoRoot } from './harness/paths.ts';
import { external, kubectl, useCluster } from './lib/cluster.ts';
import { eventually } from './lib/eventually.ts';
import { nodeAction, nodeReadyTransition } from './lib/failover.ts';
import { helmInstall, localImage, release, removeCsiSuite, filePoolClass } from './lib/chart.ts';
import { deploy, freshDisks, getRv } from './lib/volumes.ts';
import { csiUniqueVolumeName } from '../../src/controller/decisions/workload.ts';
import { DRIVER_NAME } from '../../src/csi/identity.ts';

const ROUNDS = Number(process.env.TANDEM_E2E_DB_ROUNDS ?? 2);
jest.setTimeout(600_000 + ROUNDS * 240_000);
const describeLocal = external ? describe.skip : describe;
useCluster();
const ns = `e2e-db-${process.pid}`;
const pool = 'e2e-db';
const sc = 'e2e-db-tandem';
const nodes = ['master', 'backup'] as const;
const poolDir = (node: string) => `/var/lib/tandem/pools/e2e-db-${node}`;

type Pod = {
  spec: { nodeName?: string };
  status: { podIP?: string; conditions?: { type: string; status: string; lastTransitionTime: string }[] };
  metadata: { uid: string; deletionTimestamp?: string };
};

const sql = (host: string, statement: string, timeoutMs = 5000) =>
  new Promise<{ ok: boolean; out: string; err: string }>((resolve) => {
    execFile(
      'mariadb',
      ['-h', host, '-u', 'root', '--connect-timeout=2', '-N', '-B', '-e', statement],
      { timeout: timeoutMs },
      (error, stdout, stderr) => resolve({ ok: !error, out: stdout, err: stderr }),
    );
  });

async function dbPod(): Promise<Pod | undefined> {
  const r = await kubectl(['get', 'pod', '-n', ns, 'db-0', '-o', 'json']).catch(() => undefined);
  return r ? (JSON.parse(r.stdout) as Pod) : undefined;
}

/** Commits rows 1, 2, 3 … one INSERT each (autocommit); a row counts once the server said OK. */
class RowWriter {
  readonly committed: { id: number; t: number }[] = [];
  #stop = false;
  #ip: string | undefined;
  #next = 1;
  #done: Promise<void> | undefined;

  start(): void {
    this.#done = this.#run();
  }

  async #run(): Promise<void> {
    while (!this.#stop) {
      if (!this.#ip) {
        const p = await dbPod();
        this.#ip = p && !p.metadata.deletionTimestamp ? p.status.podIP : undefined;
        if (!this.#ip) {
          await sleep(200);
          continue;
        }
      }
      const id = this.#next;
      const r = await sql(this.#ip, `INSERT INTO acceptance.t (id) VALUES (${id})`);
      // An INSERT that failed after the server committed it (the reply lost) comes back as a
      // duplicate on the retry: it is in the table, so it counts.
      if (r.ok || /Duplicate entry/.test(r.err)) {
        this.committed.push({ id, t: Date.now() });
        this.#next++;
      } else {
        this.#ip = undefined;
        await sleep(100);
      }
    }
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#done;
  }

  after(t: number): { id: number; t: number } | undefined {
    return this.committed.find((c) => c.t > t);
  }
}

describeLocal('a MariaDB StatefulSet on a tandem PVC survives the loss of its node', () => {
  let mariadb = '';
  const writer = new RowWriter();

  beforeAll(async () => {
    await deploy('undeploy').catch(() => undefined);
    await freshDisks([]);
    const img = await localImage();
    await helmInstall(img, { csi: true });
    const built = await build(repoRoot, ['mariadb'], () => {});
    await importImages([built.mariadb!]);
    mariadb = built.mariadb!.ref;
    await kubectl(['create', 'namespace', ns]);
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          ...filePoolClass(pool, sc, nodes, poolDir),
          {
            apiVersion: 'apps/v1',
            kind: 'StatefulSet',
            metadata: { name: 'db', namespace: ns },
            spec: {
              serviceName: 'db',
              replicas: 1,
              selector: { matchLabels: { app: 'db' } },
              template: {
                metadata: { labels: { app: 'db' } },
                spec: {
                  terminationGracePeriodSeconds: 5,
                  containers: [
                    {
                      name: 'mariadb',
                      image: mariadb,
                      imagePullPolicy: 'Never',
                      // No grant tables: the test's client connects as root from the host.
                      args: [
                        '--user=mysql',
                        '--datadir=/var/lib/mysql',
                        '--bind-address=0.0.0.0',
                        '--skip-name-resolve',
                        '--skip-grant-tables',
                        '--innodb-flush-log-at-trx-commit=1',
                        '--innodb-buffer-pool-size=32M',
                      ],
                      readinessProbe: { exec: { command: ['mariadb', '-e', 'SELECT 1'] }, periodSeconds: 1 },
                      volumeMounts: [{ name: 'data', mountPath: '/var/lib/mysql' }],
                    },
                  ],
                },
              },
              volumeClaimTemplates: [
                {
                  metadata: { name: 'data' },
                  spec: {
                    storageClassName: sc,
                    accessModes: ['ReadWriteOnce'],
                    resources: { requests: { storage: '256Mi' } },
                  },
                },
              ],
            },
          },
        ],
      }),
    });
    // The StatefulSet controller makes the pod a moment after the apply; `kubectl wait` on a
    // pod that does not exist yet fails at once.
    await eventually(async () => expect(await dbPod()).toBeDefined(), { timeoutMs: 60_000, what: 'pod db-0 made' });
    await kubectl(['wait', '-n', ns, 'pod/db-0', '--for=condition=Ready', '--timeout=300s']);
    const ip = (await dbPod())!.status.podIP!;
    const created = await sql(
      ip,
      'CREATE DATABASE acceptance; CREATE TABLE acceptance.t (id INT PRIMARY KEY, at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3)) ENGINE=InnoDB',
    );
    expect(created).toMatchObject({ ok: true });
  }, 900_000);

  afterAll(async () => {
    await writer.stop();
    for (const n of nodes) await nodeAction('start', n).catch(() => undefined);
    await removeCsiSuite({ ns, pool, sc, nodes, dir: poolDir }, '180s');
  }, 600_000);

  test(`${ROUNDS} rounds of stopping the database's node: it comes back on the other node with every committed row`, async () => {
    writer.start();
    const rounds: { stopped: string; toCommit: number; notReady: number; failedOver: number; podReady: number }[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const pod = (await dbPod())!;
      const victim = pod.spec.nodeName!;
      const survivor = victim === 'master' ? 'backup' : 'master';
      const before = writer.committed.length;
      await eventually(() => expect(writer.committed.length).toBeGreaterThanOrEqual(before + 50), {
        timeoutMs: 60_000,
        what: '50 rows committed before the stop',
      });
      // The name the controller removes after the failover is the one the kubelet writes.
      await eventually(async () => expect(await inUseOn(victim)).toBe(true), {
        timeoutMs: 30_000,
        what: `${victim}'s volumesInUse lists the volume`,
      });
      const t0 = Date.now();
      await nodeAction('stop', victim);
      // Stopped (frozen and killed) by now: a row answered after this came from the survivor.
      const stopped = Date.now();
      const first = await eventually(
        () => {
          const c = writer.after(stopped);
          expect(c).toBeDefined();
          return c!;
        },
        { timeoutMs: 180_000, intervalMs: 200, what: `a row committed after ${victim} stopped` },
      ).finally(() => explain(t0));
      const rv = (await getRv(release.namespace, await rvName())).status!;
      const now = (await dbPod())!;
      expect(now.spec.nodeName).toBe(survivor);
      expect(rv.primary).toBe(survivor);
      // Released from the stopped node, whose kubelet cannot say so itself (decisions/workload.ts).
      expect(rv.lastWorkloadRelease).toMatchObject({ node: victim, epoch: rv.epoch });
      expect(await inUseOn(victim)).toBe(false);
      const ready = now.status.conditions?.find((c) => c.type === 'Ready');
      const r = {
        stopped: victim,
        toCommit: first.t - t0,
        notReady: (await nodeReadyTransition(victim)).at - t0,
        failedOver: Date.parse(rv.lastFailover?.time ?? '') - t0,
        podReady: Date.parse(ready?.lastTransitionTime ?? '') - t0,
      };
      rounds.push(r);
      console.log(
        `round ${round}: ${victim} stopped → first commit on ${survivor} after ${(r.toCommit / 1000).toFixed(1)} s ` +
          `(NotReady +${(r.notReady / 1000).toFixed(1)} s, FailedOver +${(r.failedOver / 1000).toFixed(1)} s, ` +
          `pod Ready +${(r.podReady / 1000).toFixed(1)} s); ${writer.committed.length} rows committed so far`,
      );
      // The node comes back and resyncs before the next round stops the other one.
      await nodeAction('start', victim);
      await eventually(async () => expect((await nodeReadyTransition(victim)).status).toBe('True'), {
        timeoutMs: 180_000,
        what: `${victim} Ready again`,
      });
      await eventually(
        async () => {
          const s = (await getRv(release.namespace, await rvName())).status;
          expect([s?.connection, s?.disks]).toEqual(['Connected', 'UpToDate/UpToDate']);
        },
        { timeoutMs: 240_000, what: 'the pair Connected and UpToDate/UpToDate again' },
      );
    }
    await writer.stop();
    const ip = (await dbPod())!.status.podIP!;
    const rows = await sql(ip, 'SELECT id FROM acceptance.t', 30_000);
    expect(rows.ok).toBe(true);
    const inTable = new Set(rows.out.trim().split('\n').map(Number));
    const lost = writer.committed.filter((c) => !inTable.has(c.id)).map((c) => c.id);
    const times = rounds.map((r) => r.toCommit).sort((a, b) => a - b);
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    console.log(
      `${ROUNDS} rounds: stop → first commit min ${s(times[0]!)}, median ${s(times[Math.floor(times.length / 2)]!)}, ` +
        `max ${s(times.at(-1)!)}; ${writer.committed.length} rows committed, ${lost.length} lost`,
    );
    expect(lost).toEqual([]);
    // The bound: detection and failover (~10 s), the release, the attach on the new node
    // (about 1 s once the lost node's volumesInUse no longer lists the volume; before that,
    // "Multi-Attach error" until the attach/detach controller's 1-min resync: 37-98 s were
    // measured), then mount and InnoDB recovery (~2 s). 60 s leaves four times the margin
    // and still fails a round that waited for the resync's full minute.
    for (const r of rounds) expect(r.toCommit).toBeLessThan(60_000);
  });
});

/** What happened between the stop and the first commit: the namespace's events and the CSI pods' nodes. */
async function explain(t0: number): Promise<void> {
  type Ev = {
    lastTimestamp?: string;
    eventTime?: string;
    reason: string;
    message: string;
    involvedObject: { kind: string; name: string };
  };
  const evs = JSON.parse((await kubectl(['get', 'events', '-n', ns, '-o', 'json'])).stdout) as { items: Ev[] };
  const lines = evs.items
    .map((e) => ({ at: Date.parse(e.lastTimestamp ?? e.eventTime ?? '') - t0, e }))
    .filter((x) => x.at >= -1000)
    .sort((a, b) => a.at - b.at)
    .map(
      (x) =>
        `  +${(x.at / 1000).toFixed(1)} s ${x.e.involvedObject.kind}/${x.e.involvedObject.name} ${x.e.reason}: ${x.e.message}`,
    );
  const csi = (
    await kubectl([
      'get',
      'pods',
      '-n',
      release.namespace,
      '-l',
      'app.kubernetes.io/component=csi-controller',
      '-o',
      'wide',
    ])
  ).stdout;
  const vas = (await kubectl(['get', 'volumeattachments', '-o', 'wide'])).stdout;
  const pod = (await kubectl(['get', 'pod', '-n', ns, '-o', 'wide'])).stdout;
  console.log(
    `events after the stop:\n${lines.join('\n')}\ncsi controller pods:\n${csi}\nvolume attachments:\n${vas}\npods:\n${pod}`,
  );
}

/** The StatefulSet's PVC's volume handle (NAMESPACE.NAME of its ReplicatedVolume). */
async function volumeHandle(): Promise<string> {
  const pv = (await kubectl(['get', 'pvc', '-n', ns, 'data-db-0', '-o', 'jsonpath={.spec.volumeName}'])).stdout;
  return (await kubectl(['get', 'pv', pv, '-o', 'jsonpath={.spec.csi.volumeHandle}'])).stdout;
}

/** The ReplicatedVolume behind the StatefulSet's PVC. */
async function rvName(): Promise<string> {
  return (await volumeHandle()).split('.')[1]!;
}

/** Whether `node`'s status.volumesInUse (the kubelet's report) lists the PVC's volume. */
async function inUseOn(node: string): Promise<boolean> {
  const inUse = (await kubectl(['get', 'node', node, '-o', 'jsonpath={.status.volumesInUse}'])).stdout;
  const listed = inUse ? (JSON.parse(inUse) as string[]) : [];
  return listed.includes(csiUniqueVolumeName(DRIVER_NAME, await volumeHandle()));
}
