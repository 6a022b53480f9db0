import { parseVolumeId, volumeId, volumeNameFor } from './identity.ts';

describe('CSI names', () => {
  test("the provisioner's pvc-<uid> is the volume's name", () => {
    expect(volumeNameFor('pvc-0b6e5b2c-3f1a-4c53-9d59-2f5a3c2e7a10')).toBe('pvc-0b6e5b2c-3f1a-4c53-9d59-2f5a3c2e7a10');
  });
  test.each(['Sanity-Vol', 'a.b', 'x'.repeat(128), '-lead', 'trail-'])(
    '%s becomes a hash, the same every time',
    (n) => {
      const got = volumeNameFor(n);
      expect(got).toMatch(/^csi-[0-9a-f]{32}$/);
      expect(volumeNameFor(n)).toBe(got);
    },
  );
  test('two names never share a volume', () => {
    expect(volumeNameFor('A')).not.toBe(volumeNameFor('B'));
  });
  test('volume ids round-trip; foreign ids are not ours', () => {
    expect(parseVolumeId(volumeId('tandem-system', 'pvc-1'))).toEqual({ namespace: 'tandem-system', name: 'pvc-1' });
    for (const bad of ['', 'nodot', 'Upper.x', '.x', 'ns.', 'ns/x', 'some-id-that-does-not-exist'])
      expect(parseVolumeId(bad)).toBeUndefined();
  });
});
