// The engine's configuration for one replica, in DRBD syntax (drbd.conf(5)), so
// that on the node `tandemadm -c /run/tandem/RES.res status RES` works as
// drbdadm does, and so the agent needs no other way to configure an engine.
// A pure function of the replica spec and the shared secret.
//
// Every value that came from the API is written as a quoted string (or, for
// numbers and addresses, checked to be exactly that), so no value can end its
// statement and start another: a disk named `/x; } handlers { split-brain "sh" ; ` is
// one string, the engine opens that path (and the agent's path checks refuse it
// first). Handlers come only from the agent itself (`fence`), never from the spec.
// A value the syntax cannot carry (a control character in a path, a lone UTF-16
// surrogate, which the file's UTF-8 would change) is refused with ConfigValueError,
// nothing is written. render-config.test.ts renders hostile strings and parses them
// back with tandemadm's own parser.
import { isIPv4, isIPv6 } from 'node:net';
import { AFTER_SB_0PRI, AFTER_SB_1PRI, AFTER_SB_2PRI, ON_IO_ERROR, PROTOCOLS } from '../api/config.ts';
import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';

/** A spec value that cannot be written into a configuration file as it is; nothing was rendered. */
export class ConfigValueError extends Error {
  readonly code = 'TANDEM_ERR_CONFIG_VALUE';
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'ConfigValueError';
    this.field = field;
  }
}

const STRING_ESCAPES: Record<string, string> = { '\\': '\\\\', '"': '\\"', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * drbd.conf quoting, the inverse of tokenizer.ts: a string in double quotes with
 * \ " and the three escapes the tokenizer knows (\n \r \t) escaped; every other
 * character stands for itself inside quotes.
 */
export function quote(s: string, field = 'value'): string {
  // The file is UTF-8: a string that does not survive the trip (a lone surrogate) would change.
  if (Buffer.from(s, 'utf8').toString('utf8') !== s)
    throw new ConfigValueError(field, 'contains a lone UTF-16 surrogate');
  return `"${s.replace(/[\\"\n\r\t]/g, (c) => STRING_ESCAPES[c] as string)}"`;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what is refused
const CONTROL = /[\u0000-\u001f\u007f]/;

/** A host path: absolute, no control characters, no [ ] (they would read as a meta-disk index). */
function path(p: string, field: string): string {
  if (!p.startsWith('/')) throw new ConfigValueError(field, 'must be an absolute path');
  if (CONTROL.test(p)) throw new ConfigValueError(field, 'contains a control character');
  if (/[[\]]/.test(p)) throw new ConfigValueError(field, 'contains [ or ]');
  return quote(p, field);
}

/** A Kubernetes node name (DNS subdomain): it also names a directory (discarded-data-dir). */
function node(n: string, field: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(n) || n.includes('..'))
    throw new ConfigValueError(field, 'must be a Kubernetes node name');
  return quote(n, field);
}

/** A name (volume, verify-alg): any text without control characters, quoted. */
function name(n: string, field: string): string {
  if (n.length === 0) throw new ConfigValueError(field, 'is empty');
  if (CONTROL.test(n)) throw new ConfigValueError(field, 'contains a control character');
  return quote(n, field);
}

function oneOf(v: string, choices: readonly string[], field: string): string {
  if (!choices.includes(v)) throw new ConfigValueError(field, `must be one of ${choices.join(', ')}`);
  return v;
}

function integer(n: number, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new ConfigValueError(field, `must be an integer between ${min} and ${max}`);
  return n;
}

function metaDisk(m: string, field: string): string {
  if (m === 'internal') return 'internal';
  const indexed = /^(.*)\[(\d{1,9})\]$/.exec(m);
  return indexed ? `${path(indexed[1] as string, field)} [${Number(indexed[2])}]` : path(m, field);
}

function address(a: string, port: number, field: string): string {
  if (isIPv4(a)) return `ipv4 ${a}:${port}`;
  if (isIPv6(a)) return `ipv6 [${a}]:${port}`;
  throw new ConfigValueError(field, 'must be an IPv4 or IPv6 address');
}

/** The fence-peer handler: a command line of the agent's own making (never from the spec). */
export type FenceHandler = { command: string };

/** The fence-peer handler command line: this Node binary, our handler script, the agent's socket. */
export function fenceHandlerCommand(nodeBinary: string, script: string, agentSocket: string): string {
  const sh = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
  return [nodeBinary, script, agentSocket].map(sh).join(' ');
}

/** The node's TLS files for the peer link (the agent writes them from the node's TLS Secret). */
export type TlsFiles = { ca: string; cert: string; key: string };

export function renderConfig(
  spec: ReplicatedVolumeReplicaSpec,
  sharedSecret: string,
  fence?: FenceHandler,
  tls?: TlsFiles,
): string {
  const port = integer(spec.port, 'port', 1, 65535);
  const minor = integer(spec.minor, 'minor', 0, 1 << 20);
  const thisNode = node(spec.node, 'node');
  if (!/^[A-Za-z0-9_.+-]+$/.test(spec.resource))
    throw new ConfigValueError('resource', 'use letters, digits and _ . + -');
  const host = (e: ReplicatedVolumeReplicaSpec['self'], which: string) => [
    `  on ${node(e.node, `${which}.node`)} {`,
    `    disk ${path(e.disk, `${which}.disk`)};`,
    `    meta-disk ${metaDisk(e.metaDisk, `${which}.metaDisk`)};`,
    `    address ${address(e.address, port, `${which}.address`)};`,
    '  }',
  ];
  const disk = [
    `on-io-error ${oneOf(spec.onIoError, ON_IO_ERROR, 'onIoError')};`,
    // The API server is the tiebreaker (DESIGN.md §4): a Primary that loses its peer
    // freezes until the fence is recorded in the volume's status.
    ...(fence ? ['fencing resource-and-stonith;'] : []),
    `discarded-data-dir ${path(`/var/lib/tandem/discarded/${spec.node}`, 'node')};`,
    ...(spec.sizeBytes !== undefined ? [`size ${Math.floor(integer(spec.sizeBytes, 'sizeBytes', 0) / 1024)}K;`] : []),
    ...(spec.resyncRateBytes !== undefined
      ? [`resync-rate ${Math.max(1, Math.floor(integer(spec.resyncRateBytes, 'resyncRateBytes', 0) / 1024))}K;`]
      : []),
  ];
  const net = [
    'cram-hmac-alg sha256;',
    `shared-secret ${quote(sharedSecret, 'shared-secret')};`,
    `after-sb-0pri ${oneOf(spec.splitBrain.afterSb0pri, AFTER_SB_0PRI, 'splitBrain.afterSb0pri')};`,
    `after-sb-1pri ${oneOf(spec.splitBrain.afterSb1pri, AFTER_SB_1PRI, 'splitBrain.afterSb1pri')};`,
    `after-sb-2pri ${oneOf(spec.splitBrain.afterSb2pri, AFTER_SB_2PRI, 'splitBrain.afterSb2pri')};`,
    'ping-int 2;',
    'connect-int 2;',
    ...(spec.verifyAlg ? [`verify-alg ${name(spec.verifyAlg, 'verifyAlg')};`] : []),
    // TLS 1.3, both ends proving their node's certificate from the controller's CA; the
    // shared secret's challenge still runs inside it.
    ...(tls
      ? [
          'tls yes;',
          `tls-ca ${path(tls.ca, 'tls-ca')};`,
          `tls-cert ${path(tls.cert, 'tls-cert')};`,
          `tls-key ${path(tls.key, 'tls-key')};`,
        ]
      : []),
  ];
  return [
    // The comment ends at the line's end: the names in it are quoted, so none holds a newline.
    `// Written by tandem-node-agent for ReplicatedVolume ${name(spec.volume, 'volume')} (replica on ${thisNode}, epoch ${integer(spec.epoch, 'epoch', 0)}). Do not edit.`,
    `resource ${spec.resource} {`,
    `  protocol ${oneOf(spec.protocol, PROTOCOLS, 'protocol')};`,
    // The Primary's engine attaches its export as this kernel nbd device where the node has
    // the nbd driver, else as a loop device over nbdfuse (tandemadm's attach auto).
    `  device /dev/nbd${minor} minor ${minor};`,
    '  options { attach auto; }',
    `  disk { ${disk.join(' ')} }`,
    `  net { ${net.join(' ')} }`,
    // unfence-peer: the same script asks the agent to lift the peer's fence the moment
    // the pair is whole again, so a failover right after a resync is not refused;
    // split-brain: the agent rejoins the pair now, not at its next pass.
    ...(fence
      ? [
          `  handlers { fence-peer ${quote(fence.command)}; unfence-peer ${quote(fence.command)}; split-brain ${quote(fence.command)}; }`,
        ]
      : []),
    ...host(spec.self, 'self'),
    ...host(spec.peer, 'peer'),
    '}',
    '',
  ].join('\n');
}
