import { parseAddress } from './address.ts';
import { ConfigError } from './config-error.ts';
import type { Token } from './tokenizer.ts';

const word = (text: string): Token => ({ kind: 'word', text, at: { file: 'f', line: 1, column: 1 } });

describe('parseAddress', () => {
  it.each([
    [undefined, '192.168.1.101:7789', { family: 'ipv4', host: '192.168.1.101', port: 7789 }],
    ['ipv4', '1.2.3.4:1', { family: 'ipv4', host: '1.2.3.4', port: 1 }],
    ['ipv6', '[fd00::1]:7789', { family: 'ipv6', host: 'fd00::1', port: 7789 }],
    [undefined, '[::1]:65535', { family: 'ipv6', host: '::1', port: 65535 }],
  ])('reads address %s %s', (family, text, expected) => {
    expect(parseAddress(family === undefined ? undefined : word(family), word(text))).toEqual(expected);
  });

  it.each([
    [undefined, 'master:7789'],
    [undefined, '1.2.3.4'],
    [undefined, '1.2.3.4:0'],
    [undefined, '1.2.3.4:port'],
    ['ipv4', '[fd00::1]:7789'],
    ['ipv6', 'fd00::1:7789'],
    ['ipv6', '[1.2.3.4]:7789'],
    ['sci', '1.2.3.4:7789'],
  ])('rejects address %s %s', (family, text) => {
    expect(() => parseAddress(family === undefined ? undefined : word(family), word(text))).toThrow(ConfigError);
  });
});
