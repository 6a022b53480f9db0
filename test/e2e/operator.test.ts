// The operator on the real control plane (issue 4's "Done when"): helm install with
// the image built here, the controller Deployment and agent DaemonSet as pods on the
// nodes' kubelets (TANDEM_E2E_DEPLOY=processes: the host-process shortcut instead),
// the tutorial's volume from examples/mysql-volume.yaml unchanged, a manual role
// switch that carries data across, kill -9 of controller and agents under I/O,
// bad volumes refused or conditioned without touching a disk, and deletion that
// takes the engines down and wipes nothing. Local harness only (it runs the
// agents inside the simulated nodes).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { repoRoot } from './harness/paths.ts';
import { expectApiError, external, helm, kubectl, useCluster } from './lib/cluster.ts';
import {
  agentBack,
  controllerBack,
  installTandem,
  killAgent,
  killLeader,
  onPods,
  pods,
  release,
  removeTandem,
} from './lib/chart.ts';
import { eventually } from './lib/eventually.ts';
import { execInNode, exited, spawnInNode } from './lib/nodes.ts';
import { watchRoles } from './lib/role-watch.ts';
import {
  deploy,
  freshDisks,
  getRv as getRvIn,
  readyCondition as ready,
  waitReady as waitReadyIn,
} from './lib/volumes.ts';

jest.setTimeout(240_000);
const describeLocal = external ? describe.skip : describe;
const cluster = useCluster();
const ns = `e2e-operator-${process.pid}`;
const example = join(repoRoot, 'examples/mysql-volume.yaml');
const getRv = (name: string) => getRvIn(ns, name);
const waitReady = (name: string, primary: string, timeoutMs?: number) => waitReadyIn(ns, name, primary, timeoutMs);

async function engineFiles(node: string): Promise<string> {
  return (await execInNode(node, ['sh', '-c', 'ls /run/tandem'])).stdout;
}

describeLocal('the operator on the local control plane', () => {
  // Every role change in the suite's namespace has a recorded cause (checked after each test).
  const roles = watchRoles(ns);
  afterEach(() => roles.check(), 30_000);

  beforeAll(async () => {
    await installTandem(['/mydata/mysql']);
    await kubectl(['create', 'namespace', ns]);
    await roles.start();
  }, 600_000);

  afterAll(async () => {
    await removeTandem(ns, ['/mydata/mysql']);
  }, 300_000);

  test('the chart lints clean and its RBAC is least privilege', async () => {
    const lint = await helm(['lint', join(repoRoot, 'helm/tandem')]);
    expect(lint.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    expect(lint.stdout).not.toContain('[WARNING]');
    const rendered = (await helm(['template', 'tandem', join(repoRoot, 'helm/tandem'), '--namespace', 'tandem-system']))
      .stdout;
    expect(rendered).not.toMatch(/verbs:.*\*/);
    expect(rendered).not.toMatch(/resources:.*\*/);
    expect(rendered).not.toMatch(/name: cluster-admin/);
    const noCrds = (await helm(['template', 'tandem', join(repoRoot, 'helm/tandem'), '--set', 'installCRDs=false']))
      .stdout;
    expect(noCrds).not.toContain('kind: CustomResourceDefinition');
    // `kubectl auth can-i` exits 1 for "no"; the answer is the last line either way.
    const can = async (sa: string, verb: string, resource: string) => {
      const [res, sub] = resource.split('/');
      const args = [
        'auth',
        'can-i',
        verb,
        res!,
        ...(sub ? [`--subresource=${sub}`] : []),
        '-n',
        ns,
        `--as=system:serviceaccount:tandem-system:${sa}`,
      ];
      return (await kubectl(args).catch((e: Error) => ({ stdout: e.message }))).stdout.trim().split('\n').pop();
    };
    expect(await can('tandem-node-agent', 'patch', 'replicatedvolumereplicas.tandem.dev/status')).toBe('yes');
    expect(await can('tandem-node-agent', 'patch', 'replicatedvolumereplicas.tandem.dev')).toBe('no');
    expect(await can('tandem-node-agent', 'patch', 'replicatedvolumes.tandem.dev')).toBe('no');
    // The fence: the agent patches the volume's status (conditionally), nothing else of it.
    expect(await can('tandem-node-agent', 'patch', 'replicatedvolumes.tandem.dev/status')).toBe('yes');
    expect(await can('tandem-node-agent', 'update', 'replicatedvolumes.tandem.dev/status')).toBe('no');
    expect(await can('tandem-node-agent', 'list', 'secrets')).toBe('no');
    expect(await can('tandem-controller', 'delete', 'replicatedvolumes.tandem.dev')).toBe('no');
    // Replica specs are written conditional on the resourceVersion read: create and update, no patch.
    expect(await can('tandem-controller', 'update', 'replicatedvolumereplicas.tandem.dev')).toBe('yes');
    expect(await can('tandem-controller', 'patch', 'replicatedvolumereplicas.tandem.dev')).toBe('no');
    expect(await can('tandem-controller', 'list', 'secrets')).toBe('no');
  });

  describe('bad volumes', () => {
    const rv = (name: string, spec: object) =>
      JSON.stringify({
        apiVersion: 'tandem.dev/v1alpha1',
        kind: 'ReplicatedVolume',
        metadata: { name, namespace: ns },
        spec: { pool: 'tutorial', ...spec },
      });
    const good = [
      { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
      { node: 'backup', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
    ];

    test('protocol D and the same node twice are refused by the API server, with the reason', async () => {
      const create = (name: string, spec: object) =>
        cluster.custom.createNamespacedCustomObject({
          group: 'tandem.dev',
          version: 'v1alpha1',
          namespace: ns,
          plural: 'replicatedvolumes',
          body: JSON.parse(rv(name, spec)),
        });
      const d = await expectApiError(create('proto-d', { protocol: 'D', replicas: good }));
      expect(d.code).toBe(422);
      expect(d.message).toContain('spec.protocol: Unsupported value: "D": supported values: "A", "B", "C"');
      const twice = await expectApiError(create('twice', { replicas: [good[0], good[0]] }));
      expect(twice.code).toBe(422);
      expect(twice.message).toContain('the two replicas must be on two different nodes');
      const one = await expectApiError(create('one', { replicas: [good[0]] }));
      expect(one.message).toContain('spec.replicas: Invalid value');
    });

    test('an unknown node: Ready=False NodeNotFound, no replica is created', async () => {
      await kubectl(['apply', '-f', '-'], {
        input: rv('nowhere', { replicas: [good[0], { node: 'nowhere', disk: '/dev/sdb1' }] }),
      });
      const got = await eventually(
        async () => {
          const r = await getRv('nowhere');
          expect(ready(r)).toMatchObject({
            status: 'False',
            reason: 'NodeNotFound',
            message: 'node nowhere does not exist',
          });
          return r;
        },
        { timeoutMs: 30_000, what: 'NodeNotFound' },
      );
      expect(got.status?.phase).toBe('Failed');
      expect(
        (await kubectl(['get', 'rvr', '-n', ns, '-l', 'tandem.dev/volume=nowhere', '-o', 'name'])).stdout.trim(),
      ).toBe('');
      const events = (
        await kubectl([
          'get',
          'events',
          '-n',
          ns,
          '--field-selector',
          'involvedObject.name=nowhere',
          '-o',
          'jsonpath={.items[*].reason}',
        ])
      ).stdout;
      expect(events).toContain('NodeNotFound');
      await kubectl(['delete', 'rv', 'nowhere', '-n', ns, '--timeout=60s']);
    });

    test('a disk path missing on a node: Ready=False DiskMissing naming it, and no engine starts on either node', async () => {
      // An administrator granted a device that does not exist (yet) on master.
      await kubectl(['apply', '-f', '-'], {
        input: JSON.stringify({
          apiVersion: 'tandem.dev/v1alpha1',
          kind: 'StoragePool',
          metadata: { name: 'e2e-missing' },
          spec: {
            nodes: [
              { node: 'master', devices: ['/dev/sdc1'] },
              { node: 'backup', devices: ['/dev/sdb1', '/dev/sdb2'] },
            ],
          },
        }),
      });
      await kubectl(['apply', '-f', '-'], {
        input: rv('nodisk', { pool: 'e2e-missing', replicas: [{ node: 'master', disk: '/dev/sdc1' }, good[1]] }),
      });
      const got = await eventually(
        async () => {
          const r = await getRv('nodisk');
          expect(ready(r)).toMatchObject({ status: 'False', reason: 'DiskMissing' });
          return r;
        },
        { timeoutMs: 30_000, what: 'DiskMissing' },
      );
      expect(ready(got)?.message).toBe('master: /dev/sdc1 does not exist on node master; nothing was touched');
      // The good side is held at Probe: no create-md, no engine.
      await new Promise((r) => setTimeout(r, 3000));
      const backup = JSON.parse((await kubectl(['get', 'rvr', 'nodisk-backup', '-n', ns, '-o', 'json'])).stdout) as {
        spec: { engine: string };
        status?: { role?: string };
      };
      expect(backup.spec.engine).toBe('Probe');
      expect(backup.status?.role).toBe('Unconfigured');
      expect(await engineFiles('backup')).not.toContain(`${ns}.nodisk`);
      await kubectl(['delete', 'rv', 'nodisk', '-n', ns, '--timeout=60s']);
    });
  });

  test('two controllers: only the Lease holder acts; on SIGTERM it hands the Lease over and the standby takes over at once', async () => {
    const holder = async () =>
      (
        await kubectl([
          'get',
          'lease',
          'tandem-controller',
          '-n',
          'tandem-system',
          '-o',
          'jsonpath={.spec.holderIdentity}',
        ])
      ).stdout;
    let standbyName: string;
    let t0: number;
    if (onPods) {
      // The chart runs two replicas: one leads, the other waits with warm caches and does nothing.
      const leader = await holder();
      const standby = (await pods('controller')).find((p) => p.metadata.name !== leader);
      expect(standby).toBeDefined();
      standbyName = standby!.metadata.name;
      const logs = (await kubectl(['logs', '-n', release.namespace, standbyName])).stdout;
      expect(logs).not.toContain('Starting workers');
      expect(await holder()).toBe(leader);
      t0 = Date.now();
      // SIGTERM (the pod's deletion): it hands the Lease back on its way out.
      await kubectl(['delete', 'pod', '-n', release.namespace, leader, '--wait=false']);
    } else {
      expect(await holder()).toBe('tandem-controller-local');
      standbyName = 'tandem-controller-2-local';
      const standbyLog = join(repoRoot, '.cluster/logs/tandem-controller-2.log');
      const logFrom = existsSync(standbyLog) ? statSync(standbyLog).size : 0; // the log is appended to across runs
      await deploy('start-controller', 'controller-2');
      await new Promise((r) => setTimeout(r, 3000));
      expect(readFileSync(standbyLog).subarray(logFrom).toString()).not.toContain('Starting workers');
      expect(await holder()).toBe('tandem-controller-local');
      t0 = Date.now();
      await deploy('stop', 'controller');
    }
    await eventually(async () => expect(await holder()).toBe(standbyName), {
      timeoutMs: 10_000,
      what: 'the standby holds the Lease',
    });
    console.log(`Lease handed over in ${Date.now() - t0} ms`);
    // The new leader reconciles: a fresh volume gets its condition.
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'tandem.dev/v1alpha1',
        kind: 'ReplicatedVolume',
        metadata: { name: 'standby', namespace: ns },
        spec: {
          pool: 'tutorial',
          replicas: [
            { node: 'master', disk: '/dev/sdb1' },
            { node: 'elsewhere', disk: '/dev/sdb1' },
          ],
        },
      }),
    });
    await eventually(async () => expect(ready(await getRv('standby'))?.reason).toBe('NodeNotFound'), {
      timeoutMs: 20_000,
      what: 'the standby reconciles',
    });
    await kubectl(['delete', 'rv', 'standby', '-n', ns, '--timeout=60s']);
    if (!onPods) {
      // Back to one controller under the usual name for the rest of the suite.
      await deploy('start-controller');
      await deploy('stop', 'controller-2');
      await eventually(async () => expect(await holder()).toBe('tandem-controller-local'), {
        timeoutMs: 30_000,
        what: 'the first controller leads again',
      });
    }
  });

  describe('the tutorial volume (examples/mysql-volume.yaml, unchanged)', () => {
    beforeAll(async () => {
      await freshDisks();
    }, 60_000);

    test('becomes Primary on master, Connected, UpToDate/UpToDate, Ready=True, with the filesystem mounted', async () => {
      const t0 = Date.now();
      await kubectl(['apply', '-n', ns, '-f', example]);
      const rv = await waitReady('mysql', 'master');
      console.log(`mysql Ready after ${((Date.now() - t0) / 1000).toFixed(1)} s (initial full sync of 1 GiB included)`);
      expect(rv.status?.epoch).toBe(1);
      expect(rv.status?.lastRoleChange).toMatchObject({ to: 'master', epoch: 1, reason: 'InitialPlacement' });
      expect(rv.metadata.finalizers).toContain('tandem.dev/replicated-volume');
      const table = (await kubectl(['get', 'rv', 'mysql', '-n', ns])).stdout;
      expect(table).toMatch(/^NAME\s+PRIMARY\s+PROTOCOL\s+CONNECTION\s+DISKS\s+SYNC\s+READY\s+AGE/);
      expect(table).toMatch(/mysql\s+master\s+C\s+Connected\s+UpToDate\/UpToDate\s+True/);
      const mount = await eventually(
        async () => {
          const m = (await execInNode('master', ['stat', '-f', '-c', '%T', '/mydata/mysql'])).stdout.trim();
          expect(m).toBe('xfs');
          return m;
        },
        { timeoutMs: 30_000, what: 'the xfs mount on master' },
      );
      expect(mount).toBe('xfs');
      const events = (
        await kubectl([
          'get',
          'events',
          '-n',
          ns,
          '--field-selector',
          'involvedObject.name=mysql',
          '-o',
          'jsonpath={.items[*].reason}',
        ])
      ).stdout;
      expect(events).toContain('Promoted');
      expect(events).toContain('SyncFinished');
    });

    test("each node's agent renews its own Lease (its liveness; replica status is written on change)", async () => {
      for (const node of ['master', 'backup']) {
        const renewed = await eventually(
          async () => {
            const t = (
              await kubectl([
                'get',
                'lease',
                `tandem-agent-${node}`,
                '-n',
                release.namespace,
                '-o',
                'jsonpath={.spec.renewTime}',
              ])
            ).stdout.trim();
            const age = Date.now() - Date.parse(t);
            expect(age).toBeLessThan(10_000);
            return age;
          },
          { timeoutMs: 20_000, what: `a fresh Lease of the agent on ${node}` },
        );
        expect(renewed).toBeGreaterThan(-5_000);
      }
    });

    test('data written through the Primary is readable on the other node after a manual role switch (spec.primary)', async () => {
      await execInNode('master', [
        'sh',
        '-c',
        'head -c 4194304 /dev/urandom > /mydata/mysql/data.bin && sha256sum /mydata/mysql/data.bin | cut -d" " -f1 > /mydata/mysql/data.sha && sync',
      ]);
      const want = (await execInNode('master', ['cat', '/mydata/mysql/data.sha'])).stdout.trim();
      await kubectl(['patch', 'rv', 'mysql', '-n', ns, '--type=merge', '-p', '{"spec":{"primary":"backup"}}']);
      const rv = await waitReady('mysql', 'backup', 60_000);
      expect(rv.status?.epoch).toBe(2);
      expect(rv.status?.lastRoleChange).toMatchObject({
        from: 'master',
        to: 'backup',
        epoch: 2,
        reason: 'PreferredPrimary',
      });
      // The volume's filesystem left master; an empty read-only placeholder keeps its place.
      expect(
        (
          await execInNode('master', [
            'sh',
            '-c',
            'findmnt -n -o SOURCE,FSTYPE,OPTIONS /mydata/mysql || echo unmounted',
          ])
        ).stdout.trim(),
      ).toMatch(/^tandem-not-primary\s+tmpfs\s+ro,/);
      const got = await eventually(
        async () =>
          (await execInNode('backup', ['sh', '-c', 'sha256sum /mydata/mysql/data.bin | cut -d" " -f1'])).stdout.trim(),
        { timeoutMs: 30_000, what: 'the file on backup' },
      );
      expect(got).toBe(want);
    });

    test('kill -9 of the controller and both agents under I/O: writes go on, state converges again', async () => {
      // 400 synchronous 64 KiB writes on the Primary (backup now), about as long as the restart takes.
      const writer = spawnInNode('backup', [
        'sh',
        '-c',
        'dd if=/dev/urandom of=/mydata/mysql/stream bs=64k count=400 oflag=sync status=none && echo WROTE',
      ]);
      let out = '';
      writer.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
      });
      await new Promise((r) => setTimeout(r, 500));
      if (onPods) {
        await killLeader();
        await killAgent('master');
        await killAgent('backup');
      } else for (const p of ['controller', 'agent-master', 'agent-backup']) await deploy('kill', p);
      const { code } = await exited(writer);
      expect({ code, out: out.trim() }).toEqual({ code: 0, out: 'WROTE' });
      expect((await execInNode('backup', ['stat', '-c', '%s', '/mydata/mysql/stream'])).stdout.trim()).toBe(
        String(400 * 65536),
      );
      await controllerBack();
      await agentBack('master');
      await agentBack('backup');
      const rv = await waitReady('mysql', 'backup', 60_000);
      expect(rv.status?.epoch).toBe(2); // nothing changed hands
      expect(rv.status?.lastRoleChange).toMatchObject({
        from: 'master',
        to: 'backup',
        epoch: 2,
        reason: 'PreferredPrimary',
      });
      // Heartbeats are fresh again: the new agents re-attached to the running engines.
      const rvr = JSON.parse((await kubectl(['get', 'rvr', 'mysql-backup', '-n', ns, '-o', 'json'])).stdout) as {
        status: { lastHeartbeatTime: string; role: string };
      };
      expect(rvr.status.role).toBe('Primary');
      expect(Date.now() - Date.parse(rvr.status.lastHeartbeatTime)).toBeLessThan(15_000);
    });

    test('options the engines cannot take live are refused with the reason, not silently ignored', async () => {
      const err = await kubectl([
        'patch',
        'rv',
        'mysql',
        '-n',
        ns,
        '--type=merge',
        '-p',
        '{"spec":{"protocol":"A"}}',
      ]).then(
        () => '',
        (e: Error) => e.message,
      );
      expect(err).toContain(
        'spec.protocol: Invalid value: "object": protocol cannot be changed on an existing volume yet (no live adjust)',
      );
    });

    test('deleting the volume takes the engines down and wipes nothing', async () => {
      await kubectl(['delete', 'rv', 'mysql', '-n', ns, '--timeout=90s']);
      for (const n of ['master', 'backup']) {
        expect(await engineFiles(n)).not.toMatch(/\.ctl|\.res/);
        expect((await execInNode(n, ['sh', '-c', 'findmnt -n /mydata/mysql || echo unmounted'])).stdout.trim()).toBe(
          'unmounted',
        );
      }
      // The data is still on the backing disk (external metadata: /dev/sdb1 holds the filesystem as is).
      expect(
        (await execInNode('backup', ['blkid', '-p', '-o', 'value', '-s', 'TYPE', '/dev/sdb1'])).stdout.trim(),
      ).toBe('xfs');
    });
  });
});
