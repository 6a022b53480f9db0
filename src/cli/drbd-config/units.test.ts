import { parseInteger, parseScaled, UNIT } from './units.ts';

describe('parseScaled', () => {
  it.each([
    ['1024M', UNIT.kib, 1024 * 1024 * 1024],
    ['1024m', UNIT.kib, 1073741824],
    ['100', UNIT.kib, 102400],
    ['100K', UNIT.kib, 102400],
    ['2G', UNIT.kib, 2 * 1024 ** 3],
    ['8', UNIT.sector, 4096],
    ['8s', UNIT.kib, 4096],
    ['0', UNIT.kib, 0],
  ])('%s with a default unit of %d bytes is %d bytes', (text, unit, bytes) => {
    expect(parseScaled(text, unit)).toBe(bytes);
  });

  it.each(['', 'M', '10X', '1.5M', '-1', '10 M', '99999999999999999999'])('rejects %j', (text) => {
    expect(parseScaled(text, UNIT.kib)).toBeUndefined();
  });
});

describe('parseInteger', () => {
  it('accepts plain decimal integers only', () => {
    expect(parseInteger('60')).toBe(60);
    expect(parseInteger('007')).toBe(7);
    expect(parseInteger('6s')).toBeUndefined();
    expect(parseInteger('0x10')).toBeUndefined();
    expect(parseInteger('')).toBeUndefined();
  });
});
