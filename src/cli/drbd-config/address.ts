// `address [ipv4|ipv6] ADDR:PORT;` — drbd.conf(5). DRBD wants literal IP addresses,
// not host names; an IPv6 address goes in brackets: `address ipv6 [fd00::1]:7789;`.
import { isIPv4, isIPv6 } from 'node:net';
import type { Address } from '../../api/config.ts';
import { ConfigError } from './config-error.ts';
import type { Token } from './tokenizer.ts';

const FAMILIES = ['ipv4', 'ipv6'] as const;
const UNSUPPORTED_FAMILIES = ['ssocks', 'sdp', 'sci'];

export function isAddressFamily(word: string): boolean {
  return (FAMILIES as readonly string[]).includes(word) || UNSUPPORTED_FAMILIES.includes(word);
}

/** `family` is the optional word before the address (`ipv4`, `ipv6`). */
export function parseAddress(family: Token | undefined, address: Token): Address {
  if (family && !(FAMILIES as readonly string[]).includes(family.text)) {
    throw new ConfigError(`address family '${family.text}' is not supported (use ipv4 or ipv6)`, family.at);
  }
  const text = address.text;
  const ipv6 = family ? family.text === 'ipv6' : text.startsWith('[');
  const match = ipv6 ? /^\[([^\]]+)\]:(\d+)$/.exec(text) : /^([^:]+):(\d+)$/.exec(text);
  const host = match?.[1] ?? '';
  if (!match || !(ipv6 ? isIPv6(host) : isIPv4(host))) {
    const example = ipv6 ? 'ipv6 [fd00::1]:7789' : '192.168.1.101:7789';
    throw new ConfigError(
      `bad address '${text}': expected an ${ipv6 ? 'IPv6' : 'IPv4'} address and a port, like 'address ${example}'`,
      address.at,
    );
  }
  const port = Number(match[2]);
  if (port < 1 || port > 65535) {
    throw new ConfigError(`bad address '${text}': port must be between 1 and 65535`, address.at);
  }
  return { family: ipv6 ? 'ipv6' : 'ipv4', host, port };
}
