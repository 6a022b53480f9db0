import { chooseAttach } from './attach.ts';

describe('chooseAttach', () => {
  test.each([
    // setting, device, nbd module → method
    [undefined, '/dev/drbd0', false, 'none'],
    [undefined, '/dev/drbd0', true, 'none'],
    [undefined, '/dev/nbd0', true, 'nbd'],
    [undefined, '/dev/nbd0', false, 'fuse'],
    ['auto', '/dev/drbd0', true, 'fuse'],
    ['auto', undefined, false, 'fuse'],
    ['fuse', '/dev/nbd3', true, 'fuse'],
    ['nbd', '/dev/nbd3', true, 'nbd'],
    ['nbd', '/dev/nbd3', false, 'none'],
    ['nbd', '/dev/drbd0', true, 'none'],
    ['none', '/dev/nbd0', true, 'none'],
    ['bogus', '/dev/nbd0', true, 'none'],
  ] as const)('attach %s with device %s, nbd driver %s → %s', (setting, device, hasNbdModule, method) => {
    const c = chooseAttach({ setting, device, hasNbdModule });
    expect(c.method).toBe(method);
    expect(c.reason.length).toBeGreaterThan(0);
  });
});
