// The typed form of a DRBD-syntax resource, after `common` is merged in and the
// 8.3-era `syncer {}` options are moved to where DRBD 8.4 keeps them.
// The parser (src/cli/drbd-config) produces it; the engine consumes it.
import { z } from 'zod';

export const PROTOCOLS = ['A', 'B', 'C'] as const;
export const Protocol = z.enum(PROTOCOLS);
export type Protocol = z.infer<typeof Protocol>;

export const ON_IO_ERROR = ['detach', 'pass_on', 'call-local-io-error'] as const;
export const FENCING = ['dont-care', 'resource-only', 'resource-and-stonith'] as const;
export type FencingPolicy = (typeof FENCING)[number];
export const AFTER_SB_0PRI = [
  'disconnect',
  'discard-younger-primary',
  'discard-older-primary',
  'discard-zero-changes',
  'discard-least-changes',
  'discard-local',
  'discard-remote',
] as const;
export const AFTER_SB_1PRI = [
  'disconnect',
  'consensus',
  'discard-secondary',
  'call-pri-lost-after-sb',
  'violently-as0p',
] as const;
export const AFTER_SB_2PRI = ['disconnect', 'violently-as0p', 'call-pri-lost-after-sb'] as const;

/** `meta-disk internal`, `meta-disk /dev/sdb2[0]` (indexed, 128 MiB slots) or `meta-disk /dev/sdb2` (flexible, whole device). */
export const MetaDisk = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('internal') }),
  z.object({ kind: z.literal('indexed'), path: z.string().min(1), index: z.number().int().nonnegative() }),
  z.object({ kind: z.literal('flexible'), path: z.string().min(1) }),
]);
export type MetaDisk = z.infer<typeof MetaDisk>;

export const Address = z.object({
  family: z.enum(['ipv4', 'ipv6']).default('ipv4'),
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535),
});
export type Address = z.infer<typeof Address>;

export const HostConfig = z.object({
  /** The name after `on`: matched against the hostname, --node or TANDEM_NODE. */
  name: z.string().min(1),
  device: z.string().min(1).optional(),
  /** Minor number from `device minor N` or the digits of /dev/drbdN; used for the ` N:` status prefix. */
  minor: z.number().int().nonnegative(),
  disk: z.string().min(1),
  metaDisk: MetaDisk,
  address: Address,
});
export type HostConfig = z.infer<typeof HostConfig>;

export const NetOptions = z.object({
  allowTwoPrimaries: z.boolean().default(false),
  cramHmacAlg: z.string().optional(),
  sharedSecret: z.string().optional(),
  /**
   * tandem only: the peer link runs over TLS 1.3 with mutual authentication. `tlsCa` signs
   * both nodes' certificates; `tlsCert`/`tlsKey` are this node's (PEM files), and the peer's
   * certificate must name the peer node (subject CN or a DNS subjectAltName).
   */
  tls: z.boolean().default(false),
  tlsCa: z.string().optional(),
  tlsCert: z.string().optional(),
  tlsKey: z.string().optional(),
  afterSb0pri: z
    .enum(AFTER_SB_0PRI)
    .or(z.string().regex(/^discard-node-.+$/))
    .default('disconnect'),
  afterSb1pri: z.enum(AFTER_SB_1PRI).default('disconnect'),
  afterSb2pri: z.enum(AFTER_SB_2PRI).default('disconnect'),
  verifyAlg: z.string().optional(),
  csumsAlg: z.string().optional(),
  /** Milliseconds (drbd.conf gives timeout/ping-timeout in tenths of a second and connect-int/ping-int in seconds; the parser converts). */
  timeoutMs: z.number().int().positive().default(6000),
  connectIntMs: z.number().int().positive().default(10000),
  pingIntMs: z.number().int().positive().default(10000),
  pingTimeoutMs: z.number().int().positive().default(500),
  /** Pages (4 KiB) a receiver may hold in flight before it stops reading from the peer (DRBD's max-buffers). */
  maxBuffers: z.number().int().positive().default(2048),
  /** Mirrored writes per epoch before a barrier closes it (DRBD's max-epoch-size). */
  maxEpochSize: z.number().int().positive().default(2048),
  /** tandem only: bytes per epoch before a barrier closes it. */
  maxEpochBytes: z
    .number()
    .int()
    .positive()
    .default(64 * 1024 * 1024),
  /** tandem only: an epoch is closed at the latest this long (ms) after its first write. */
  maxEpochAgeMs: z.number().int().positive().default(100),
});
export type NetOptions = z.infer<typeof NetOptions>;

export const DiskOptions = z.object({
  onIoError: z.enum(ON_IO_ERROR).default('detach'),
  /**
   * DRBD's fencing policy. `resource-and-stonith`: a Primary that loses its peer
   * freezes I/O and runs the fence-peer handler before completing any write.
   */
  fencing: z.enum(FENCING).default('dont-care'),
  /** Bytes per second; `syncer { rate 1024M; }` and `disk { resync-rate … }` land here. */
  resyncRate: z.number().int().positive().optional(),
  alExtents: z.number().int().positive().default(1237),
  /** `size` option: limit the usable size in bytes. */
  size: z.number().int().positive().optional(),
  /** Tenths of a second, as in drbd.conf. */
  cPlanAhead: z.number().int().nonnegative().optional(),
  /** Bytes per second. */
  cMaxRate: z.number().int().nonnegative().optional(),
  /** Bytes per second. */
  cMinRate: z.number().int().nonnegative().optional(),
  /** Bytes. */
  cFillTarget: z.number().int().nonnegative().optional(),
  /**
   * tandem only: where a resync target saves the blocks it is about to overwrite
   * when it discards its own changes (a split-brain victim), so they can be recovered.
   * `none` turns it off.
   */
  discardedDataDir: z.string().default('/var/lib/tandem/discarded'),
});
export type DiskOptions = z.infer<typeof DiskOptions>;

export const ResourceConfig = z.object({
  name: z.string().regex(/^[A-Za-z0-9_.+-]+$/),
  protocol: Protocol.default('C'),
  hosts: z.array(HostConfig).min(1),
  net: NetOptions,
  disk: DiskOptions,
  handlers: z.record(z.string(), z.string()).default({}),
  startup: z.record(z.string(), z.string()).default({}),
  options: z.record(z.string(), z.string()).default({}),
  /** Where each resource was defined, for error messages: `file:line`. */
  source: z.string(),
});
export type ResourceConfig = z.infer<typeof ResourceConfig>;

export const GlobalConfig = z.object({
  usageCount: z.string().optional(),
  options: z.record(z.string(), z.string()).default({}),
});
export type GlobalConfig = z.infer<typeof GlobalConfig>;

export const TandemConfig = z.object({
  global: GlobalConfig,
  resources: z.array(ResourceConfig),
});
export type TandemConfig = z.infer<typeof TandemConfig>;
