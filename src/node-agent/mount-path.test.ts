// Where a volume may be mounted: the admin's root, canonical paths, no overlap with an older claim.
import { lstat, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkMountPath, type MountClaim, mountRootFor, prepareMountPoint, within } from './mount-path.ts';

const claim = (key: string, mountPath: string, created = '2026-12-06T10:00:00Z'): MountClaim => ({
  key,
  created,
  mountPath,
});

test.each<[string, string, string, MountClaim[], string | undefined]>([
  ['the tutorial path under the default root', '/mydata', '/mydata/mysql', [], undefined],
  ['a path below the namespace root', '/srv/tandem/{namespace}', '/srv/tandem/shop/db', [], undefined],
  ['the root itself', '/mydata', '/mydata', [], 'not below the mount root /mydata'],
  ['a sibling with the root as prefix', '/mydata', '/mydata2/x', [], 'not below the mount root'],
  ['/etc', '/mydata', '/etc', [], 'not below the mount root'],
  ['the kubelet dir', '/mydata', '/var/lib/kubelet/pods/x', [], 'not below the mount root'],
  ['a climb out of the root', '/mydata', '/mydata/../../app/bin', [], 'not a canonical absolute path'],
  ['a . segment', '/mydata', '/mydata/./x', [], 'not a canonical absolute path'],
  ['a trailing slash', '/mydata', '/mydata/mysql/', [], 'not a canonical absolute path'],
  ['a double slash', '/mydata', '/mydata//mysql', [], 'not a canonical absolute path'],
  ['a relative path', '/mydata', 'mydata/mysql', [], 'not a canonical absolute path'],
  ['another namespace root', '/srv/tandem/{namespace}', '/srv/tandem/other/db', [], 'not below the mount root'],
  ['a bad root template', 'srv/{namespace}/', '/srv/x/db', [], 'is not a canonical absolute path'],
  [
    'an older claim on the same path',
    '/mydata',
    '/mydata/b',
    [claim('b/b-master', '/mydata/b', '2026-01-01T00:00:00Z')],
    'is the mount path of b/b-master',
  ],
  [
    'inside an older claim',
    '/mydata',
    '/mydata/b/x',
    [claim('b/b-master', '/mydata/b', '2026-01-01T00:00:00Z')],
    'overlaps the mount path /mydata/b',
  ],
  [
    'around an older claim',
    '/mydata',
    '/mydata/b',
    [claim('b/b-master', '/mydata/b/x', '2026-01-01T00:00:00Z')],
    'overlaps',
  ],
  [
    'a newer claim on the same path does not block',
    '/mydata',
    '/mydata/b',
    [claim('z/z-master', '/mydata/b', '2027-01-01T00:00:00Z')],
    undefined,
  ],
  [
    'same age: the smaller key wins',
    '/mydata',
    '/mydata/b',
    [claim('a/a-master', '/mydata/b')],
    'is the mount path of a/a-master',
  ],
  ['a sibling claim', '/mydata', '/mydata/b', [claim('a/a-master', '/mydata/bb', '2026-01-01T00:00:00Z')], undefined],
])('%s', (_what, rootTemplate, mountPath, others, refused) => {
  const r = checkMountPath({ rootTemplate, namespace: 'shop', me: claim('shop/db-master', mountPath), others });
  if (refused === undefined) expect(r).toBeUndefined();
  else expect(r).toEqual({ reason: 'MountPathRefused', message: expect.stringContaining(refused) });
});

test('mountRootFor and within', () => {
  expect(mountRootFor('/srv/{namespace}/vols', 'a')).toBe('/srv/a/vols');
  expect(mountRootFor('/srv/{namespace}', '..')).toBeUndefined();
  expect(within('/a', '/a')).toBe(true);
  expect(within('/a', '/ab')).toBe(false);
  expect(within('/', '/x')).toBe(true);
});

describe('prepareMountPoint on a real directory tree', () => {
  let host: string;
  beforeEach(async () => {
    host = await mkdtemp(join(tmpdir(), 'tandem-mount-'));
  });
  afterEach(async () => {
    await rm(host, { recursive: true, force: true });
  });

  test('creates the mount point one directory at a time under the root', async () => {
    expect(await prepareMountPoint(host, '/mydata', '/mydata/shop/db')).toBe(`${host}/mydata/shop/db`);
    expect((await lstat(`${host}/mydata/shop/db`)).isDirectory()).toBe(true);
  });

  test('refuses a symlink on the way (it could lead anywhere on the host)', async () => {
    await mkdir(`${host}/mydata`, { recursive: true });
    await mkdir(`${host}/etc`);
    await symlink(`${host}/etc`, `${host}/mydata/shop`);
    await expect(prepareMountPoint(host, '/mydata', '/mydata/shop/db')).rejects.toMatchObject({
      code: 'TANDEM_ERR_MOUNT_PATH',
      message: expect.stringContaining('/mydata/shop is a symlink'),
    });
    expect(await readdir(`${host}/etc`)).toEqual([]);
  });

  test('refuses a mount root that is a symlink', async () => {
    await mkdir(`${host}/elsewhere`);
    await symlink(`${host}/elsewhere`, `${host}/mydata`);
    await expect(prepareMountPoint(host, '/mydata', '/mydata/db')).rejects.toMatchObject({
      code: 'TANDEM_ERR_MOUNT_PATH',
    });
  });

  test('refuses a file where a directory should be', async () => {
    await mkdir(`${host}/mydata`, { recursive: true });
    await writeFile(`${host}/mydata/db`, 'x');
    await expect(prepareMountPoint(host, '/mydata', '/mydata/db')).rejects.toMatchObject({
      message: expect.stringContaining('not a directory'),
    });
  });
});
