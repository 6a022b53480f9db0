// `tandemadm dump RES`: the resource as tandem understood it, in drbd.conf syntax
// (after `common` was merged and `syncer {}` options moved to their 8.4 places).
import type { HostConfig, MetaDisk, ResourceConfig } from '../api/config.ts';

function metaDisk(m: MetaDisk): string {
  return m.kind === 'internal' ? 'internal' : m.kind === 'indexed' ? `${m.path}[${m.index}]` : m.path;
}

function host(h: HostConfig): string[] {
  const addr =
    h.address.family === 'ipv6'
      ? `ipv6 [${h.address.host}]:${h.address.port}`
      : `ipv4 ${h.address.host}:${h.address.port}`;
  return [
    `    on ${h.name} {`,
    `        device           ${h.device ?? `minor ${h.minor}`}${h.device ? ` minor ${h.minor}` : ''};`,
    `        disk             ${h.disk};`,
    `        meta-disk        ${metaDisk(h.metaDisk)};`,
    `        address          ${addr};`,
    '    }',
  ];
}

export function dumpResource(r: ResourceConfig): string {
  const net: string[] = [];
  if (r.net.allowTwoPrimaries) net.push('allow-two-primaries yes;');
  if (r.net.cramHmacAlg) net.push(`cram-hmac-alg ${r.net.cramHmacAlg};`);
  if (r.net.sharedSecret) net.push('shared-secret "<hidden>";');
  if (r.net.tls)
    net.push('tls yes;', `tls-ca ${r.net.tlsCa};`, `tls-cert ${r.net.tlsCert};`, `tls-key ${r.net.tlsKey};`);
  if (r.net.verifyAlg) net.push(`verify-alg ${r.net.verifyAlg};`);
  if (r.net.csumsAlg) net.push(`csums-alg ${r.net.csumsAlg};`);
  net.push(
    `after-sb-0pri ${r.net.afterSb0pri};`,
    `after-sb-1pri ${r.net.afterSb1pri};`,
    `after-sb-2pri ${r.net.afterSb2pri};`,
  );
  const disk = [`on-io-error ${r.disk.onIoError};`, `al-extents ${r.disk.alExtents};`];
  if (r.disk.resyncRate) disk.push(`resync-rate ${Math.floor(r.disk.resyncRate / 1024)}k;`);
  const handlers = Object.entries(r.handlers).map(([k, v]) => `${k} ${JSON.stringify(v)};`);
  const block = (name: string, lines: string[]): string[] =>
    lines.length === 0 ? [] : [`    ${name} {`, ...lines.map((l) => `        ${l}`), '    }'];
  return [
    `# resource ${r.name} on ${r.source}`,
    `resource ${r.name} {`,
    `    protocol ${r.protocol};`,
    ...block('net', net),
    ...block('disk', disk),
    ...block('handlers', handlers),
    ...r.hosts.flatMap(host),
    '}',
  ].join('\n');
}
