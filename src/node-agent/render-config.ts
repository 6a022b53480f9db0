// The engine's configuration for one replica, in DRBD syntax (drbd.conf(5)), so
// that on the node `tandemadm -c /run/tandem/RES.res status RES` works as
// drbdadm does, and so the agent needs no other way to configure an engine.
// A pure function of the replica spec and the shared secret.
import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';

/** drbd.conf quoting: a string in double quotes, with \ and " escaped. */
function quote(s: string): string {
  return `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

function addr(a: string): string {
  return a.includes(':') ? `ipv6 [${a}]` : a;
}

/** Where the agent is reached by the engines' fence-peer handler, and how the handler is run. */
export type FenceHandler = { command: string };

/** The fence-peer handler command line: this Node binary, our handler script, the agent's socket. */
export function fenceHandlerCommand(nodeBinary: string, script: string, agentSocket: string): string {
  const sh = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
  return [nodeBinary, script, agentSocket].map(sh).join(' ');
}

export function renderConfig(spec: ReplicatedVolumeReplicaSpec, sharedSecret: string, fence?: FenceHandler): string {
  const host = (e: ReplicatedVolumeReplicaSpec['self']) => [
    `  on ${e.node} {`,
    `    disk ${e.disk};`,
    `    meta-disk ${e.metaDisk};`,
    `    address ${addr(e.address)}:${spec.port};`,
    '  }',
  ];
  const disk = [
    `on-io-error ${spec.onIoError};`,
    // The API server is the tiebreaker (DESIGN.md §4): a Primary that loses its peer
    // freezes until the fence is recorded in the volume's status.
    ...(fence ? ['fencing resource-and-stonith;'] : []),
    `discarded-data-dir ${quote(`/var/lib/tandem/discarded/${spec.node}`)};`,
    ...(spec.sizeBytes !== undefined ? [`size ${Math.floor(spec.sizeBytes / 1024)}K;`] : []),
    ...(spec.resyncRateBytes !== undefined
      ? [`resync-rate ${Math.max(1, Math.floor(spec.resyncRateBytes / 1024))}K;`]
      : []),
  ];
  const net = [
    'cram-hmac-alg sha256;',
    `shared-secret ${quote(sharedSecret)};`,
    `after-sb-0pri ${spec.splitBrain.afterSb0pri};`,
    `after-sb-1pri ${spec.splitBrain.afterSb1pri};`,
    `after-sb-2pri ${spec.splitBrain.afterSb2pri};`,
    'ping-int 2;',
    'connect-int 2;',
    ...(spec.verifyAlg ? [`verify-alg ${spec.verifyAlg};`] : []),
  ];
  return [
    `// Written by tandem-node-agent for ReplicatedVolume ${spec.volume} (replica on ${spec.node}, epoch ${spec.epoch}). Do not edit.`,
    `resource ${spec.resource} {`,
    `  protocol ${spec.protocol};`,
    // The Primary's engine attaches its export as this kernel nbd device where the node has
    // the nbd driver, else as a loop device over nbdfuse (tandemadm's attach auto).
    `  device /dev/nbd${spec.minor} minor ${spec.minor};`,
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
    ...host(spec.self),
    ...host(spec.peer),
    '}',
    '',
  ].join('\n');
}
