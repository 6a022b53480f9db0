// Issue 15 item 7: a hostile tenant. A namespace user (real RBAC: the built-in `edit`
// role, which aggregates tandem's tandem-user; every request impersonated as that
// user) tries to reach a host through tandem, and is refused by the API server, the
// controller or the node's agent; the host and the nodes' disks are unharmed. Runs
// against the controller and agents under the chart's ServiceAccounts (cluster-deploy).
import { X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { state } from './harness/paths.ts';
import * as k8s from '@kubernetes/client-node';
import { apiError, external, kubectl, useCluster } from './lib/cluster.ts';
import { eventually } from './lib/eventually.ts';
import { cutLink, healLink } from './lib/failover.ts';
import { internalIP, scrapeAgent, statesOf } from './lib/metrics.ts';
import { execInNode, spawnInNode } from './lib/nodes.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { deploy, freshDisks, getRv, readyCondition, tearDown, waitReady } from './lib/volumes.ts';

jest.setTimeout(240_000);
const describeLocal = external ? describe.skip : describe;
useCluster();
const ns = `e2e-tenant-${process.pid}`;
const user = 'mallory';
/** kubectl as the tenant: impersonated, so the API server applies the tenant's RBAC. */
const asTenant = (args: string[], input?: string) =>
  kubectl([`--as=${user}`, '-n', ns, ...args], input === undefined ? {} : { input });
/** The API server's refusal of a tenant's request, as kubectl prints it. */
const refusal = (args: string[], input?: string) =>
  asTenant(args, input).then(
    (r) => `accepted: ${r.stdout}`,
    (e: Error) => e.message,
  );
const rv = (name: string, spec: object, annotations?: Record<string, string>) =>
  JSON.stringify({
    apiVersion: 'tandem.dev/v1alpha1',
    kind: 'ReplicatedVolume',
    metadata: { name, ...(annotations ? { annotations } : {}) },
    spec,
  });
const tutorialReplicas = [
  { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
  { node: 'backup', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
];
const filePool = 'e2e-tenancy-files';
/** A small file-backed volume in the suite's pool, Primary on master. */
const smallFileVolume = {
  pool: filePool,
  size: '16Mi',
  primary: 'master',
  replicas: [{ node: 'master' }, { node: 'backup' }],
};
/** Holds argv[3] idle connections to argv[1]:argv[2], reopening each one 20 ms after it ends. */
const FLOOD = `
const net = require('node:net');
const [host, port, count] = process.argv.slice(1);
const open = () => {
  const s = net.connect({ host, port: Number(port) });
  s.setTimeout(1000, () => s.destroy());
  s.on('connect', () => s.setTimeout(0));
  s.on('error', () => {});
  s.on('close', () => setTimeout(open, 20));
};
for (let i = 0; i < Number(count); i++) open();
`;
const poolDir = (node: string) => `/var/lib/tandem/pools/e2e-tenancy-${node}`;

describeLocal('a hostile tenant', () => {
  beforeAll(async () => {
    await freshDisks();
    await deploy('deploy');
    await kubectl(['create', 'namespace', ns]);
    await kubectl(['create', 'rolebinding', 'tenant-edit', '--clusterrole=edit', `--user=${user}`, '-n', ns]);
    // The administrator's file pool: one directory per node (the simulated nodes share the host's /var/lib).
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'tandem.dev/v1alpha1',
        kind: 'StoragePool',
        metadata: { name: filePool },
        spec: { nodes: ['master', 'backup'].map((node) => ({ node, directory: poolDir(node) })) },
      }),
    });
    // The edit role picks up tandem-user once the aggregation controller has run.
    await eventually(
      async () =>
        expect((await asTenant(['auth', 'can-i', 'create', 'replicatedvolumes.tandem.dev'])).stdout.trim()).toBe('yes'),
      { timeoutMs: 30_000, what: 'edit aggregates tandem-user' },
    );
  }, 180_000);

  afterAll(async () => {
    await tearDown(ns);
    await kubectl(['delete', 'storagepool', filePool, '--ignore-not-found']).catch(() => undefined);
    for (const n of ['master', 'backup']) await execInNode(n, ['rm', '-rf', poolDir(n)]).catch(() => undefined);
  }, 180_000);

  test('RBAC: volumes yes; pools, replicas, status and other namespaces no', async () => {
    const can = async (...args: string[]) =>
      (await asTenant(['auth', 'can-i', ...args]).catch((e: Error) => ({ stdout: e.message }))).stdout
        .trim()
        .split('\n')
        .pop();
    expect(await can('create', 'replicatedvolumes.tandem.dev')).toBe('yes');
    expect(await can('get', 'storagepools.tandem.dev')).toBe('yes');
    expect(await can('create', 'storagepools.tandem.dev')).toBe('no');
    expect(await can('patch', 'storagepools.tandem.dev')).toBe('no');
    expect(await can('patch', 'replicatedvolumes.tandem.dev', '--subresource=status')).toBe('no');
    expect(await can('create', 'replicatedvolumereplicas.tandem.dev')).toBe('no');
    expect(await can('update', 'replicatedvolumereplicas.tandem.dev')).toBe('no');
    expect(await can('get', 'secrets', '-n', 'tandem-system')).toBe('no');
    expect(await can('create', 'replicatedvolumes.tandem.dev', '-n', 'default')).toBe('no');
    // And a real request, not only the answer of can-i.
    expect(
      await refusal(
        ['apply', '-f', '-'],
        JSON.stringify({
          apiVersion: 'tandem.dev/v1alpha1',
          kind: 'StoragePool',
          metadata: { name: 'mine' },
          spec: { nodes: [{ node: 'master', devices: ['/dev/sda'] }] },
        }),
      ),
    ).toMatch(/Forbidden|forbidden/);
  });

  test.each([
    ['a handlers section injected through the disk', { disk: '/dev/x;}handlers{split-brain"id>/tmp/pwned";}' }],
    ['a quote in the disk', { disk: '/dev/x"' }],
    ['a climb out of /dev', { disk: '/dev/../etc/shadow' }],
    ['a trailing slash', { disk: '/dev/sdb1/' }],
    ['a meta-disk with ..', { metaDisk: '/dev/../dev/sda[0]' }],
  ])('the API server refuses %s', async (_what, replica) => {
    const spec = { pool: 'tutorial', replicas: [{ ...tutorialReplicas[0], ...replica }, tutorialReplicas[1]] };
    expect(await refusal(['apply', '-f', '-'], rv('bad', spec))).toContain('Invalid value');
  });

  test.each([
    ['the agent binary directory', '/mydata/../../app/bin'],
    ['a trailing slash', '/mydata/x/'],
    ['a double slash', '/mydata//x'],
  ])('the API server refuses a mount path climbing or aliasing: %s', async (_what, mountPath) => {
    const spec = { pool: 'tutorial', filesystem: 'xfs', mountPath, replicas: tutorialReplicas };
    expect(await refusal(['apply', '-f', '-'], rv('badmount', spec))).toContain('Invalid value');
  });

  test.each([
    [
      'the host disk, not granted',
      'nohost',
      { replicas: [{ node: 'master', disk: '/dev/sda' }, tutorialReplicas[1]] },
      'NotGranted',
    ],
    [
      'the meta-disk on the disk',
      'samedev',
      { replicas: [{ node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb1[0]' }, tutorialReplicas[1]] },
      'SameDevice',
    ],
    ['a pool that does not exist', 'nopool', { pool: 'nosuchpool', replicas: tutorialReplicas }, 'PoolNotFound'],
    [
      "a pool file named explicitly (another volume's)",
      'stealfile',
      {
        pool: filePool,
        size: '64Mi',
        replicas: [{ node: 'master', disk: `${poolDir('master')}/other.victim.img` }, { node: 'backup' }],
      },
      'NotGranted',
    ],
  ])('the controller refuses %s: Ready=False, no replica, no disk touched', async (_what, name, spec, reason) => {
    await asTenant(['apply', '-f', '-'], rv(name, { pool: 'tutorial', ...spec }));
    await eventually(
      async () => expect(readyCondition(await getRv(ns, name))).toMatchObject({ status: 'False', reason }),
      {
        timeoutMs: 30_000,
        what: reason,
      },
    );
    expect(
      (await kubectl(['get', 'rvr', '-n', ns, '-l', `tandem.dev/volume=${name}`, '-o', 'name'])).stdout.trim(),
    ).toBe('');
    await asTenant(['delete', 'rv', name, '--timeout=60s']);
  });

  test('a file-backed volume with a forged port and a mount path on /etc: sparse files made, port reassigned, no mount on /etc', async () => {
    await asTenant(
      ['apply', '-f', '-'],
      rv(
        'files',
        {
          pool: filePool,
          size: '64Mi',
          primary: 'master',
          filesystem: 'ext4',
          mountPath: '/etc/tandem-pwned',
          replicas: [{ node: 'master' }, { node: 'backup' }],
        },
        // Forged: sshd's port. The controller owns the port; it is reassigned.
        { 'tandem.dev/port': '22' },
      ),
    );
    const got = await waitReady(ns, 'files', 'master', 180_000);
    const port = (got as { status?: { port?: number } }).status?.port;
    expect(port).toBeGreaterThanOrEqual(7789);
    expect(port).toBeLessThan(7789 + 1000);
    const annotation = JSON.parse(
      (await kubectl(['get', 'rv', 'files', '-n', ns, '-o', 'jsonpath={.metadata.annotations}'])).stdout,
    ) as Record<string, string>;
    expect(annotation['tandem.dev/port']).toBe(String(port));
    // Each node has its own sparse file in its pool directory, nothing else.
    for (const n of ['master', 'backup']) {
      const file = `${poolDir(n)}/${ns}.files.img`;
      const [size, kind] = (await execInNode(n, ['stat', '-c', '%s %F', file])).stdout.trim().split(' ');
      expect(kind).toBe('regular');
      expect(Number(size)).toBeGreaterThan(64 * 2 ** 20);
      expect((await execInNode(n, ['ls', poolDir(n)])).stdout.trim()).toBe(`${ns}.files.img`);
    }
    // The mount path outside the administrator's root is refused on the Primary, and /etc is untouched.
    await eventually(
      async () => {
        const rvr = JSON.parse((await kubectl(['get', 'rvr', 'files-master', '-n', ns, '-o', 'json'])).stdout) as {
          status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
        };
        expect(rvr.status?.conditions?.find((c) => c.type === 'Mounted')).toMatchObject({
          status: 'False',
          reason: 'MountPathRefused',
          message: expect.stringContaining('not below the mount root /mydata'),
        });
      },
      { timeoutMs: 30_000, what: 'Mounted=False MountPathRefused' },
    );
    expect(
      (await execInNode('master', ['sh', '-c', 'test -e /etc/tandem-pwned && echo yes || echo no'])).stdout.trim(),
    ).toBe('no');
    // Both files hold blocks (the metadata at least; the sync skips zeros, so they stay sparse).
    const file = (n: string) => `${poolDir(n)}/${ns}.files.img`;
    for (const n of ['master', 'backup'])
      expect(Number((await execInNode(n, ['du', '-k', file(n)])).stdout.split('\t')[0])).toBeGreaterThan(0);
    // Another tenant volume claiming the running volume's port in the annotation gets a port
    // of its own, and the first keeps its link.
    await asTenant(['apply', '-f', '-'], rv('thief', smallFileVolume, { 'tandem.dev/port': String(port) }));
    const thiefPort = ((await waitReady(ns, 'thief', 'master', 180_000)) as { status?: { port?: number } }).status
      ?.port;
    expect(thiefPort).toBeGreaterThanOrEqual(7789);
    expect(thiefPort).not.toBe(port);
    const still = (await getRv(ns, 'files')).status as { port?: number; connection?: string } | undefined;
    expect({ port: still?.port, connection: still?.connection }).toEqual({ port, connection: 'Connected' });
    await asTenant(['delete', 'rv', 'thief', '--timeout=90s']);
    // Deleting the volume deletes its backing files (data and internal metadata) on both nodes.
    await asTenant(['delete', 'rv', 'files', '--timeout=90s']);
    for (const n of ['master', 'backup']) {
      expect((await execInNode(n, ['sh', '-c', `test -e ${file(n)} && echo present || echo gone`])).stdout.trim()).toBe(
        'gone',
      );
      expect((await execInNode(n, ['ls', '-A', poolDir(n)])).stdout.trim()).toBe('');
    }
  });

  test('a tenant grows a mounted file-backed volume: both files grow, the pair stays in sync, the filesystem grows where it is mounted next; a shrink is refused', async () => {
    const MiB = 2 ** 20;
    const mountPath = `/mydata/${ns}-grown`;
    await asTenant(
      ['apply', '-f', '-'],
      rv('grown', { ...smallFileVolume, size: '320Mi', filesystem: 'xfs', mountPath }),
    );
    await waitReady(ns, 'grown', 'master', 180_000);
    const fsBytes = async (n: string) =>
      Number((await execInNode(n, ['df', '--output=size', '-B1', mountPath])).stdout.trim().split('\n').pop());
    await eventually(async () => expect(await fsBytes('master')).toBeGreaterThan(250 * MiB), {
      timeoutMs: 60_000,
      what: 'xfs mounted on master',
    });
    await execInNode('master', ['sh', '-c', `head -c ${4 * MiB} /dev/urandom > ${mountPath}/data && sync`]);
    const dataSum = (n: string) => execInNode(n, ['sh', '-c', `sha256sum < ${mountPath}/data`]).then((r) => r.stdout);
    const written = await dataSum('master');
    const file = (n: string) => `${poolDir(n)}/${ns}.grown.img`;
    const sizeOf = async (n: string) => Number((await execInNode(n, ['stat', '-c', '%s', file(n)])).stdout.trim());
    const before = { master: await sizeOf('master'), backup: await sizeOf('backup') };
    expect(await refusal(['patch', 'rv', 'grown', '--type=merge', '-p', '{"spec":{"size":"300Mi"}}'])).toContain(
      'size can grow but never shrink',
    );
    await asTenant(['patch', 'rv', 'grown', '--type=merge', '-p', '{"spec":{"size":"400Mi"}}']);
    const grown = await eventually(
      async () => {
        const got = await getRv(ns, 'grown');
        expect(got.status?.replicas?.map((r) => [r.node, r.sizeBytes, r.connectionState, r.diskState])).toEqual([
          ['master', 400 * MiB, 'Connected', 'UpToDate'],
          ['backup', 400 * MiB, 'Connected', 'UpToDate'],
        ]);
        return got;
      },
      { timeoutMs: 90_000, what: 'grown to 400 MiB on both nodes, in sync' },
    );
    for (const r of grown.status?.replicas ?? []) expect(r.capacityBytes).toBeGreaterThanOrEqual(400 * MiB);
    for (const n of ['master', 'backup'] as const) {
      expect(await sizeOf(n)).toBeGreaterThan(before[n]);
      await eventually(
        async () => {
          const rvr = JSON.parse((await kubectl(['get', 'rvr', `grown-${n}`, '-n', ns, '-o', 'json'])).stdout) as {
            status?: { conditions?: { type: string; status: string; reason: string }[] };
          };
          expect(rvr.status?.conditions?.find((c) => c.type === 'Sized')).toMatchObject({
            status: 'True',
            reason: 'AtSize',
          });
        },
        { timeoutMs: 30_000, what: `${n}: Sized=True` },
      );
      // No grow record is left beside the file.
      expect((await execInNode(n, ['ls', '-A', poolDir(n)])).stdout).not.toContain('tandem-grow');
    }
    const events = (await kubectl(['get', 'events', '-n', ns, '-o', 'jsonpath={.items[*].reason}'])).stdout.split(' ');
    expect(events.filter((e) => e === 'DiskGrown').length).toBeGreaterThanOrEqual(2);
    expect(events).toContain('Resized');
    // The grown area [320, 400) MiB, which held the old metadata on each node and lies past the
    // mounted filesystem's end (so nothing writes there now), is the same on both: it was synced.
    const digest = async (n: string) =>
      (await execInNode(n, ['sh', '-c', `dd if=${file(n)} bs=1M skip=320 count=80 status=none | sha256sum`])).stdout;
    expect(await digest('backup')).toBe(await digest('master'));
    // Mounted, the filesystem keeps its size; where it is mounted next it fills the grown device.
    const mountedSize = await fsBytes('master');
    expect(mountedSize).toBeLessThan(321 * MiB);
    await asTenant(['patch', 'rv', 'grown', '--type=merge', '-p', '{"spec":{"primary":"backup"}}']);
    await waitReady(ns, 'grown', 'backup', 120_000);
    // XFS: df leaves out the internal log (64 MiB here), so compare the growth: 80 MiB more.
    await eventually(async () => expect(await fsBytes('backup')).toBe(mountedSize + 80 * MiB), {
      timeoutMs: 60_000,
      what: 'the filesystem on backup fills 400 MiB',
    }).catch(async (err: unknown) => {
      // Say why: the agent's events (FilesystemNotGrown) and the device under the mount.
      const events = await kubectl(['get', 'events', '-n', ns, '-o', 'custom-columns=R:.reason,M:.message']);
      const dev = await execInNode('backup', [
        'sh',
        '-c',
        `findmnt -n -o SOURCE ${mountPath}; lsblk -b -o NAME,SIZE; xfs_info ${mountPath}; df -B1 ${mountPath}`,
      ]);
      throw new Error(`${(err as Error).message}\n${events.stdout}\n${dev.stdout}`);
    });
    expect(await dataSum('backup')).toBe(written);
    await asTenant(['delete', 'rv', 'grown', '--timeout=90s']);
  });

  test('a huge file-backed volume is refused by the agent before any file exists', async () => {
    await asTenant(
      ['apply', '-f', '-'],
      rv('huge', { pool: filePool, size: '1Pi', replicas: [{ node: 'master' }, { node: 'backup' }] }),
    );
    await eventually(
      async () =>
        expect(readyCondition(await getRv(ns, 'huge'))).toMatchObject({
          status: 'False',
          reason: 'NoSpace',
          message: expect.stringContaining("the pool's filesystem has"),
        }),
      { timeoutMs: 30_000, what: 'huge: NoSpace' },
    );
    for (const n of ['master', 'backup'])
      expect(
        (await execInNode(n, ['sh', '-c', `ls ${poolDir(n)} 2>/dev/null | grep -c huge || true`])).stdout.trim(),
      ).toBe('0');
    await asTenant(['delete', 'rv', 'huge', '--timeout=60s']);
  });

  test("a pool's capacity: a volume that would go over it is not placed, and is once room is made", async () => {
    const capped = 'e2e-tenancy-capped';
    const cappedDir = (node: string) => `/var/lib/tandem/pools/e2e-tenancy-capped-${node}`;
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'tandem.dev/v1alpha1',
        kind: 'StoragePool',
        metadata: { name: capped },
        spec: { nodes: ['master', 'backup'].map((node) => ({ node, directory: cappedDir(node), capacity: '96Mi' })) },
      }),
    });
    const placed = async (name: string) => (await getRv(ns, name)).status?.conditions?.find((c) => c.type === 'Placed');
    const files = async (node: string) =>
      (await execInNode(node, ['sh', '-c', `ls ${cappedDir(node)} 2>/dev/null || true`])).stdout.trim();
    try {
      const spec = { pool: capped, size: '64Mi', replicas: [{ node: 'master' }, { node: 'backup' }] };
      await asTenant(['apply', '-f', '-'], rv('cap-first', spec));
      await eventually(async () => expect(await placed('cap-first')).toMatchObject({ status: 'True' }), {
        timeoutMs: 30_000,
        what: 'cap-first placed',
      });
      await asTenant(['apply', '-f', '-'], rv('cap-second', spec));
      await eventually(
        async () =>
          expect(await placed('cap-second')).toMatchObject({
            status: 'False',
            reason: 'PoolFull',
            message: expect.stringContaining(`StoragePool ${capped} has 32.0 MiB of its capacity 96Mi left`),
          }),
        { timeoutMs: 30_000, what: 'cap-second: PoolFull' },
      );
      // The first has its files on both nodes; the second none, and no replica.
      for (const n of ['master', 'backup']) {
        await eventually(async () => expect(await files(n)).toBe(`${ns}.cap-first.img`), {
          timeoutMs: 30_000,
          what: `cap-first's file on ${n}`,
        });
      }
      expect((await kubectl(['get', 'rvr', '-n', ns, '-o', 'name'])).stdout).not.toContain('cap-second');
      // Growing past the capacity is not a way around it: the replicas keep their size, and the volume says why.
      await asTenant(['patch', 'rv', 'cap-first', '--type=merge', '-p', '{"spec":{"size":"128Mi"}}']);
      await eventually(
        async () =>
          expect((await getRv(ns, 'cap-first')).status?.conditions?.find((c) => c.type === 'Sized')).toMatchObject({
            status: 'False',
            reason: 'PoolFull',
            message: expect.stringContaining(`does not fit StoragePool ${capped}'s capacity 96Mi`),
          }),
        { timeoutMs: 30_000, what: 'cap-first: Sized=False PoolFull' },
      );
      for (const n of ['master', 'backup'])
        expect(
          (await kubectl(['get', 'rvr', `cap-first-${n}`, '-n', ns, '-o', 'jsonpath={.spec.sizeBytes}'])).stdout,
        ).toBe(String(64 * 2 ** 20));
      // Room made: the second is placed without anyone touching it.
      await asTenant(['delete', 'rv', 'cap-first', '--timeout=120s']);
      await eventually(async () => expect(await placed('cap-second')).toMatchObject({ status: 'True' }), {
        timeoutMs: 30_000,
        what: 'cap-second placed once cap-first is gone',
      });
      for (const n of ['master', 'backup'])
        await eventually(async () => expect(await files(n)).toBe(`${ns}.cap-second.img`), {
          timeoutMs: 30_000,
          what: `cap-second's file on ${n}`,
        });
    } finally {
      await asTenant(['delete', 'rv', 'cap-first', 'cap-second', '--ignore-not-found', '--timeout=120s']).catch(
        () => undefined,
      );
      await kubectl(['delete', 'storagepool', capped, '--ignore-not-found']).catch(() => undefined);
      for (const n of ['master', 'backup']) await execInNode(n, ['rm', '-rf', cappedDir(n)]).catch(() => undefined);
    }
  });

  test("a removed node's ServiceAccount, Role, RoleBinding and TLS Secret go; a live node's stay", async () => {
    const sys = 'tandem-system';
    const name = 'tandem-node-ghost';
    const labels = { 'tandem.dev/node': 'ghost', 'app.kubernetes.io/managed-by': 'tandem-controller' };
    const items = [
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: sys, labels } },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name, namespace: sys, labels },
        rules: [{ apiGroups: [''], resources: ['secrets'], verbs: ['get'], resourceNames: ['tls.ghost'] }],
      },
      {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name, namespace: sys, labels },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
        subjects: [{ kind: 'ServiceAccount', name, namespace: sys }],
      },
      {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'tls.ghost', namespace: sys, labels },
        stringData: { x: 'y' },
      },
    ];
    const left = async () =>
      (
        await kubectl([
          'get',
          'serviceaccount,role,rolebinding,secret',
          '-n',
          sys,
          '-l',
          'tandem.dev/node=ghost',
          '-o',
          'name',
        ])
      ).stdout
        .trim()
        .split('\n')
        .filter(Boolean)
        .sort();
    // A node joined (the objects as the controller makes them for a node with volumes), then is removed.
    await kubectl(['apply', '-f', '-'], {
      input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'ghost' } }),
    });
    await kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items }) });
    expect(await left()).toHaveLength(4);
    await kubectl(['delete', 'node', 'ghost']);
    await eventually(async () => expect(await left()).toEqual([]), {
      timeoutMs: 30_000,
      what: "ghost's access objects deleted",
    });
    // master holds volumes: its account and Role are untouched.
    expect(
      (await kubectl(['get', 'serviceaccount,role', 'tandem-node-master', '-n', sys, '-o', 'name'])).stdout,
    ).toContain('serviceaccount/tandem-node-master');
  });

  test("100 idle connections held against both nodes' peer ports do not delay the pair's reconnect", async () => {
    await asTenant(['apply', '-f', '-'], rv('flooded', smallFileVolume));
    const got = (await waitReady(ns, 'flooded', 'master', 180_000)) as { status?: { port?: number } };
    const port = got.status!.port!;
    const ips = Object.fromEntries(await Promise.all(['master', 'backup'].map(async (n) => [n, await internalIP(n)])));
    const connected = async () => statesOf(await scrapeAgent('master'), ns, 'flooded').connection === 'Connected';
    /** Cut the link for 3 s, heal it, and time until master's agent reports Connected again (its metrics, every 200 ms). */
    const reconnect = async () => {
      for (const n of ['master', 'backup']) await cutLink(n, port);
      await eventually(async () => expect(await connected()).toBe(false), { timeoutMs: 30_000, what: 'link cut seen' });
      await sleep(3000);
      const t = Date.now();
      for (const n of ['master', 'backup']) await healLink(n, port);
      await eventually(async () => expect(await connected()).toBe(true), {
        timeoutMs: 60_000,
        intervalMs: 200,
        what: 'Connected again',
      });
      return Date.now() - t;
    };
    const alone = await reconnect();
    // Each node's peer: a pod there (its own network namespace shares the node's address
    // here, so it passes the listener's address check) holds 50 idle connections to the
    // other node's port, each reopened 20 ms after it closes or fails to connect in 1 s.
    const attackers = (['master', 'backup'] as const).map((n) =>
      spawnInNode(n, [process.execPath, '-e', FLOOD, ips[n === 'master' ? 'backup' : 'master']!, String(port), '50']),
    );
    try {
      await sleep(2000);
      const flooded = await reconnect();
      console.log(`reconnect after a 3 s cut: ${alone} ms alone, ${flooded} ms with 100 idle connections held`);
      // A listener that serves one handshake at a time would never reconnect here.
      expect(flooded).toBeLessThan(Math.max(10_000, 4 * alone));
    } finally {
      for (const a of attackers) a.kill('SIGKILL');
      for (const n of ['master', 'backup']) await healLink(n, port).catch(() => undefined);
    }
    await asTenant(['delete', 'rv', 'flooded', '--timeout=90s']);
  });

  test('a second volume naming the disk of a running one is refused by the agent; the first is unharmed', async () => {
    // Uses the file volume's trick in reverse: the tutorial pool grants /dev/sdb1 to every volume,
    // so two tenants can name it; the older keeps it.
    await asTenant(
      ['apply', '-f', '-'],
      rv('first', { pool: 'tutorial', primary: 'master', replicas: tutorialReplicas }),
    );
    await waitReady(ns, 'first', 'master', 180_000);
    await asTenant(
      ['apply', '-f', '-'],
      rv('second', {
        pool: 'tutorial',
        primary: 'master',
        replicas: [
          { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[1]' },
          { node: 'backup', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[1]' },
        ],
      }),
    );
    await eventually(
      async () => {
        const r = await getRv(ns, 'second');
        expect(readyCondition(r)).toMatchObject({ status: 'False', reason: 'InUse' });
      },
      { timeoutMs: 30_000, what: 'second: InUse' },
    );
    const first = await waitReady(ns, 'first', 'master', 10_000);
    expect(first.status?.connection).toBe('Connected');
    await asTenant(['delete', 'rv', 'second', '--timeout=60s']);
    await asTenant(['delete', 'rv', 'first', '--timeout=90s']);
  });
  test('a stolen agent token acts only for the node it is bound to; peer secrets and events stay narrow', async () => {
    await asTenant(['apply', '-f', '-'], rv('policy', smallFileVolume));
    await waitReady(ns, 'policy', 'master', 180_000);
    // The agent's own credentials on master: a token bound to the Node master (cluster-deploy).
    // Requests as the agent makes them: a merge patch of the status subresource, no GET first.
    const asAgent = async (kubeconfig: string, what: string, body: object): Promise<string> => {
      const kc = new k8s.KubeConfig();
      kc.loadFromFile(kubeconfig);
      const custom = kc.makeApiClient(k8s.CustomObjectsApi);
      const [kind, name] = what.split('/') as [string, string];
      const plural = kind === 'rvr' ? 'replicatedvolumereplicas' : 'replicatedvolumes';
      try {
        await custom.patchNamespacedCustomObjectStatus(
          { group: 'tandem.dev', version: 'v1alpha1', plural, namespace: ns, name, body: { status: body } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
        return 'allowed';
      } catch (err) {
        return apiError(err).message;
      }
    };
    const master = join(state.run, '..', 'deploy', 'tandem-node-agent-master.kubeconfig');
    const now = new Date().toISOString();
    expect(await asAgent(master, 'rvr/policy-master', { lastHeartbeatTime: now })).toBe('allowed');
    expect(await asAgent(master, 'rvr/policy-backup', { role: 'Primary' })).toContain(
      'the agent of node master may report only its own replicas',
    );
    expect(await asAgent(master, 'rv/policy', { epoch: 99 })).toContain('may change only the fence of a volume');
    expect(await asAgent(master, 'rv/policy', { primary: 'backup' })).toContain('not primary');
    expect(
      await asAgent(master, 'rv/policy', {
        fence: { node: 'master', epoch: 1, by: 'backup', time: now, reason: 'forged' },
      }),
    ).toContain('may fence only its peer, in its own name');
    // The same ServiceAccount with a token bound to no node is refused outright.
    const unbound = join(state.run, '..', 'deploy', 'tandem-node-agent-unbound.kubeconfig');
    const token = (
      await kubectl(['create', 'token', 'tandem-node-agent', '-n', 'tandem-system', '--duration=10m'])
    ).stdout.trim();
    const masterText = readFileSync(master, 'utf8');
    writeFileSync(unbound, masterText.replace(/token: .*/, `token: ${token}`), { mode: 0o600 });
    expect(await asAgent(unbound, 'rvr/policy-master', { lastHeartbeatTime: now })).toContain('bound to no node');

    // The managed pair's link is TLS: on each node the engine's configuration names the
    // node's certificate files, that certificate names the node and comes from the
    // controller's CA, and the engine's own log shows the link it runs was TLS 1.3 (the
    // pair is Connected, so each end accepted the other's certificate). The port itself
    // cannot be probed from outside: a Connected listener closes every new connection unread.
    const caPem = Buffer.from(
      (await kubectl(['get', 'secret', 'tandem-peer-ca', '-n', 'tandem-system', '-o', 'jsonpath={.data.ca\\.crt}']))
        .stdout,
      'base64',
    ).toString('utf8');
    const caCert = new X509Certificate(caPem);
    for (const n of ['master', 'backup']) {
      const conf = (await execInNode(n, ['cat', `/run/tandem/${ns}.policy.res`])).stdout;
      expect(conf).toMatch(/tls yes; tls-ca "\/run\/tandem\/tls\/ca.crt"; tls-cert "\/run\/tandem\/tls\/tls.crt";/);
      const cert = new X509Certificate((await execInNode(n, ['cat', '/run/tandem/tls/tls.crt'])).stdout);
      expect(cert.subject).toBe(`CN=${n}`);
      expect(cert.checkIssued(caCert) && cert.verify(caCert.publicKey)).toBe(true);
      const established = (await execInNode(n, ['cat', `/run/tandem/${ns}.policy.log`])).stdout
        .split('\n')
        .filter((l) => l.includes('"TLS established"'))
        .map((l) => JSON.parse(l) as { tls?: string });
      expect(established.length).toBeGreaterThan(0);
      expect(established.every((e) => e.tls === 'TLSv1.3')).toBe(true);
    }

    // Peer secrets live in the operator's namespace, never in the tenant's.
    const peerSecret = `peer.${ns}.policy`;
    expect((await kubectl(['get', 'secret', peerSecret, '-n', 'tandem-system', '-o', 'name'])).stdout.trim()).toBe(
      `secret/${peerSecret}`,
    );
    expect((await kubectl(['get', 'secrets', '-n', ns, '-o', 'name'])).stdout).not.toContain('peer');
    // What the agent's and the controller's ServiceAccounts may do with Secrets and Events (RBAC).
    const sa = (name: string) => `--as=system:serviceaccount:tandem-system:${name}`;
    const canI = async (who: string, ...args: string[]) =>
      (await kubectl(['auth', 'can-i', sa(who), ...args]).catch((e: Error) => ({ stdout: e.message }))).stdout
        .trim()
        .split('\n')
        .pop();
    // The agents' shared ServiceAccount reads no Secret at all: it may only ask for a token of a
    // node's own ServiceAccount (tandem-node-NODE), whose Role names that node's Secrets only.
    expect(await canI('tandem-node-agent', 'get', 'secrets', '-n', 'tandem-system')).toBe('no');
    expect(
      await canI('tandem-node-agent', 'create', 'serviceaccounts', '--subresource=token', '-n', 'tandem-system'),
    ).toBe('yes');
    expect(await canI('tandem-node-master', 'get', `secret/${peerSecret}`, '-n', 'tandem-system')).toBe('yes');
    expect(await canI('tandem-node-master', 'get', 'secret/tls.master', '-n', 'tandem-system')).toBe('yes');
    expect(await canI('tandem-node-master', 'get', 'secret/tls.backup', '-n', 'tandem-system')).toBe('no');
    expect(await canI('tandem-node-master', 'get', 'secret/tandem-peer-ca', '-n', 'tandem-system')).toBe('no');
    expect(await canI('tandem-node-master', 'get', `secret/peer.${ns}.nosuchvolume`, '-n', 'tandem-system')).toBe('no');
    expect(await canI('tandem-node-master', 'list', 'secrets', '-n', 'tandem-system')).toBe('no');
    expect(await canI('tandem-node-agent', 'get', 'secrets', '-n', ns)).toBe('no');
    expect(await canI('tandem-node-agent', 'get', 'secrets', '-n', 'kube-system')).toBe('no');
    expect(await canI('tandem-node-agent', 'patch', 'events', '-n', ns)).toBe('no');
    expect(await canI('tandem-controller', 'get', 'secrets', '-n', ns)).toBe('no');
    expect(await canI('tandem-controller', 'create', 'secrets', '-n', ns)).toBe('no');
    expect(await canI('tandem-controller', 'delete', 'secrets', '-n', 'tandem-system')).toBe('yes');
    // Real requests with master's agent credentials.
    await kubectl(['create', 'secret', 'generic', 'tenant-db-password', '-n', ns, '--from-literal=password=hunter2']);
    const agentCore = (() => {
      const kc = new k8s.KubeConfig();
      kc.loadFromFile(master);
      return kc.makeApiClient(k8s.CoreV1Api);
    })();
    const outcome = (p: Promise<unknown>) =>
      p.then(
        () => 'allowed',
        (err: unknown) => apiError(err).message,
      );
    expect(await outcome(agentCore.readNamespacedSecret({ name: 'tenant-db-password', namespace: ns }))).toContain(
      'forbidden',
    );
    expect(await outcome(agentCore.listNamespacedSecret({ namespace: 'tandem-system' }))).toContain('forbidden');
    expect(await outcome(agentCore.readNamespacedSecret({ name: peerSecret, namespace: 'tandem-system' }))).toContain(
      'forbidden',
    );
    // The agent's liveness: it renews its own node's Lease, never another node's (a stolen
    // token would keep a dead node's agent looking alive and hold off its failover).
    const agentLeases = (() => {
      const kc = new k8s.KubeConfig();
      kc.loadFromFile(master);
      return kc.makeApiClient(k8s.CoordinationV1Api);
    })();
    const renew = (node: string) =>
      agentLeases.patchNamespacedLease(
        {
          name: `tandem-agent-${node}`,
          namespace: 'tandem-system',
          body: { spec: { holderIdentity: node, renewTime: new k8s.V1MicroTime(Date.now()).toISOString() } },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    expect(await outcome(renew('master'))).toBe('allowed');
    expect(await outcome(renew('backup'))).toContain(
      'the agent of node master may write only the Lease tandem-agent-master',
    );
    // Nor delete one (RBAC gives agents no delete on Leases at all).
    expect(
      await outcome(agentLeases.deleteNamespacedLease({ name: 'tandem-agent-backup', namespace: 'tandem-system' })),
    ).toContain('cannot delete resource "leases"');
    // A token for another node's ServiceAccount is refused by the admission policy; its own works.
    const tokenFor = (sa: string) =>
      agentCore.createNamespacedServiceAccountToken({
        name: sa,
        namespace: 'tandem-system',
        body: { spec: { audiences: [], expirationSeconds: 600 } },
      });
    expect(await outcome(tokenFor('tandem-node-backup'))).toContain(
      'the agent of node master may request tokens only for tandem-node-master',
    );
    expect(await outcome(tokenFor('tandem-controller'))).toContain('may request tokens only for tandem-node-master');
    const nodeToken = (await tokenFor('tandem-node-master')).status?.token ?? '';
    const nodeCore = (() => {
      const kc = new k8s.KubeConfig();
      kc.loadFromFile(master);
      const cluster = kc.getCurrentCluster()!;
      const out = new k8s.KubeConfig();
      out.loadFromOptions({
        clusters: [cluster],
        users: [{ name: 'n', token: nodeToken }],
        contexts: [{ name: 'n', cluster: cluster.name, user: 'n' }],
        currentContext: 'n',
      });
      return out.makeApiClient(k8s.CoreV1Api);
    })();
    expect(await outcome(nodeCore.readNamespacedSecret({ name: peerSecret, namespace: 'tandem-system' }))).toBe(
      'allowed',
    );
    for (const name of ['tls.backup', 'tandem-peer-ca'])
      expect(await outcome(nodeCore.readNamespacedSecret({ name, namespace: 'tandem-system' }))).toContain('forbidden');
    expect(await outcome(nodeCore.readNamespacedSecret({ name: 'tenant-db-password', namespace: ns }))).toContain(
      'forbidden',
    );
    // Events: only about tandem's objects, about its own node's replicas, in its own node's name.
    const event = (kind: string, name: string, host: string) =>
      outcome(
        agentCore.createNamespacedEvent({
          namespace: ns,
          body: {
            metadata: { generateName: `${name}.`, namespace: ns },
            involvedObject: {
              apiVersion: kind === 'Pod' ? 'v1' : 'tandem.dev/v1alpha1',
              kind,
              name,
              namespace: ns,
            },
            type: 'Warning',
            reason: 'Forged',
            message: 'forged by a stolen agent token',
            source: { component: 'tandem-node-agent', host },
            reportingComponent: 'tandem-node-agent',
            reportingInstance: host,
          },
        }),
      );
    expect(await event('ReplicatedVolumeReplica', 'policy-master', 'master')).toBe('allowed');
    expect(await event('Pod', 'mysql-0', 'master')).toContain(
      "records events only about tandem's volumes and replicas",
    );
    expect(await event('ReplicatedVolumeReplica', 'policy-backup', 'master')).toContain(
      'records events only about its own replicas',
    );
    expect(await event('ReplicatedVolume', 'policy', 'backup')).toContain('records events only in its own name');

    // Deleting the volume: on backup a root process swapped the pool file for a symlink to a
    // host file meanwhile. The agent removes master's file and refuses to follow backup's link.
    const sentinel = `/var/lib/tandem/e2e-sentinel-${process.pid}`;
    const backupFile = `${poolDir('backup')}/${ns}.policy.img`;
    await execInNode('backup', [
      'sh',
      '-c',
      `echo host-data > ${sentinel} && mv ${backupFile} ${backupFile}.moved && ln -s ${sentinel} ${backupFile}`,
    ]);
    try {
      await asTenant(['delete', 'rv', 'policy', '--timeout=90s']);
      expect(
        (
          await execInNode('master', [
            'sh',
            '-c',
            `test -e ${poolDir('master')}/${ns}.policy.img && echo present || echo gone`,
          ])
        ).stdout.trim(),
      ).toBe('gone');
      expect((await execInNode('backup', ['cat', sentinel])).stdout.trim()).toBe('host-data');
      expect((await execInNode('backup', ['readlink', backupFile])).stdout.trim()).toBe(sentinel);
      const events = (
        await kubectl(['get', 'events', '-n', ns, '--field-selector', 'reason=BackingFileKept', '-o', 'json'])
      ).stdout;
      expect(events).toContain(`${backupFile} is not a regular file`);
      // The peer Secret went with the volume (no owner reference crosses namespaces: the controller deletes it).
      expect(
        (await kubectl(['get', 'secret', peerSecret, '-n', 'tandem-system', '--ignore-not-found', '-o', 'name']))
          .stdout,
      ).toBe('');
    } finally {
      await execInNode('backup', ['rm', '-f', sentinel, backupFile, `${backupFile}.moved`]);
    }
  });
});
