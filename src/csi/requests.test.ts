import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import yaml from 'js-yaml';
import { CODES, CsiError } from './errors.ts';
import { DRIVER_NAME } from './identity.ts';
import { checkCapabilities, decideSize, parseParameters, unsupportedCapability } from './requests.ts';

const MiB = 1 << 20;
const codeOf = (f: () => unknown) => {
  try {
    f();
    return 'OK';
  } catch (err) {
    return err instanceof CsiError ? CODES[err.code] : String(err);
  }
};

describe('decideSize', () => {
  test.each([
    [undefined, 1 << 30],
    [{}, 1 << 30],
    [{ required_bytes: 1 }, MiB],
    [{ required_bytes: MiB + 1 }, 2 * MiB],
    [{ required_bytes: 10 * MiB, limit_bytes: 10 * MiB }, 10 * MiB],
    [{ limit_bytes: 5 * MiB }, 5 * MiB],
    [{ limit_bytes: 5 * MiB + 7 }, 5 * MiB],
    [{ required_bytes: 3 * MiB + 1, limit_bytes: 4 * MiB + 3 }, 4 * MiB],
  ])('%j → %d bytes', (range, bytes) => {
    expect(decideSize(range)).toBe(bytes);
  });
  test.each([
    [{ required_bytes: 2 * MiB, limit_bytes: MiB }, 'OUT_OF_RANGE'],
    [{ required_bytes: MiB + 1, limit_bytes: MiB + 100 }, 'OUT_OF_RANGE'],
    [{ limit_bytes: 100 }, 'OUT_OF_RANGE'],
    [{ required_bytes: -1 }, 'INVALID_ARGUMENT'],
  ])('%j is refused with %s', (range, code) => {
    expect(codeOf(() => decideSize(range))).toBe(code);
  });
});

describe('capabilities', () => {
  const mount = (mode: string, fs_type = '') => ({
    access_type: 'mount' as const,
    mount: { fs_type },
    access_mode: { mode },
  });
  test.each([
    [mount('SINGLE_NODE_WRITER'), undefined],
    [mount('SINGLE_NODE_WRITER', 'xfs'), undefined],
    [mount('SINGLE_NODE_READER_ONLY', 'ext4'), undefined],
    [{ access_type: 'block' as const, block: {}, access_mode: { mode: 'SINGLE_NODE_SINGLE_WRITER' } }, undefined],
    [mount('MULTI_NODE_MULTI_WRITER'), 'one Primary node at a time'],
    [mount('MULTI_NODE_READER_ONLY'), 'one Primary node at a time'],
    [mount('UNKNOWN'), 'one Primary node at a time'],
    [mount('SINGLE_NODE_WRITER', 'btrfs'), 'fs_type btrfs is not supported'],
    [{ access_mode: { mode: 'SINGLE_NODE_WRITER' } }, 'neither block nor mount'],
  ])('%j', (cap, why) => {
    const got = unsupportedCapability(cap);
    if (why === undefined) expect(got).toBeUndefined();
    else expect(got).toContain(why);
  });
  test('none at all is INVALID_ARGUMENT', () => {
    expect(codeOf(() => checkCapabilities([], 'CreateVolume'))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => checkCapabilities(undefined, 'CreateVolume'))).toBe('INVALID_ARGUMENT');
  });
});

describe('StorageClass parameters', () => {
  test('pool and the volume options', () => {
    expect(
      parseParameters({
        pool: 'fast',
        protocol: 'B',
        resyncRate: '100Mi',
        verifyAlg: 'sha256',
        onIoError: 'pass_on',
        failover: 'false',
        nodeNotReadySeconds: '30',
        'csi.storage.k8s.io/pvc/name': 'data',
      }),
    ).toEqual({
      pool: 'fast',
      protocol: 'B',
      resyncRate: '100Mi',
      verifyAlg: 'sha256',
      onIoError: 'pass_on',
      failover: false,
      nodeNotReadySeconds: 30,
    });
  });
  test.each([
    [{}, 'parameter pool is required'],
    [{ pool: 'Fast' }, 'not a StoragePool name'],
    [{ pool: 'p', protocol: 'D' }, 'one of A, B, C'],
    [{ pool: 'p', resyncRate: 'fast' }, 'a quantity'],
    [{ pool: 'p', failover: 'yes' }, 'true or false'],
    [{ pool: 'p', nodeNotReadySeconds: '0' }, '1 to 3600'],
    [{ pool: 'p', nodeNotReadySeconds: '1.5' }, '1 to 3600'],
    [{ pool: 'p', mountPath: '/etc' }, 'unknown parameter mountPath'],
  ])('%j is refused: %s', (params, why) => {
    expect(() => parseParameters(params)).toThrow(why);
    expect(codeOf(() => parseParameters(params))).toBe('INVALID_ARGUMENT');
  });
});

test('the README quick start fits together: the example StorageClass is ours, its pool is the example pool, the StatefulSet asks for it', () => {
  const root = resolve(import.meta.dirname, '../..');
  type Doc = {
    kind?: string;
    metadata: { name: string };
    provisioner?: string;
    parameters?: Record<string, string>;
    allowVolumeExpansion?: boolean;
    spec: {
      nodes: { directory?: string }[];
      volumeClaimTemplates: { spec: { storageClassName: string; accessModes: string[] } }[];
    };
  };
  const docs = (f: string) => yaml.loadAll(readFileSync(join(root, 'examples', f), 'utf8')) as Doc[];
  const sc = docs('csi-storage-class.yaml').find((d) => d?.kind === 'StorageClass')!;
  const pool = docs('storage-pool.yaml').find((d) => d?.kind === 'StoragePool')!;
  const sts = docs('mysql-statefulset.yaml').find((d) => d?.kind === 'StatefulSet')!;
  expect(sc.provisioner).toBe(DRIVER_NAME);
  // The driver expands volumes (offline): the example lets PVCs ask for more.
  expect(sc.allowVolumeExpansion).toBe(true);
  expect(parseParameters(sc.parameters)).toMatchObject({ pool: pool.metadata.name, protocol: 'C' });
  // File-backed replicas: every node the pool covers has a directory.
  expect(pool.spec.nodes.every((g) => g.directory !== undefined)).toBe(true);
  expect(sts.spec.volumeClaimTemplates[0]!.spec.storageClassName).toBe(sc.metadata.name);
  expect(sts.spec.volumeClaimTemplates[0]!.spec.accessModes).toEqual(['ReadWriteOnce']);
});
