// Fencing through the Kubernetes API: the agent's half of failover safety
// (DESIGN.md §4). The engines run with `fencing resource-and-stonith`: a Primary
// that loses an UpToDate peer freezes I/O and runs its fence-peer handler, which
// asks this agent (a line on <run-dir>/agent.sock) to make sure the peer can never
// be promoted with older data. The agent records the fence in the volume's status
// with a merge patch conditional on the resourceVersion it read — the same object
// the controller's failover writes, conditionally too — so the API server decides
// the race: either the fence lands first (the controller then sees the peer fenced
// and does not promote it) or the promotion does (the fence write fails, this node
// has been superseded and stays frozen until its agent demotes it).
//
// Answers (DRBD's fence-peer exit codes): 4 = peer fenced, resume; 6 = we are not the
// rightful Primary any more, stay frozen; 1 = the API could not be reached in time,
// stay frozen (the agent keeps trying and runs `resume-io` once the fence is written).
//
// Fence and lift for one resource are serialised: a lift that read "Connected,
// peer UpToDate" just before the link dropped completes before the new fence is
// considered, so the fence is always written after the last lift.
import { createServer, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readlinkSync, unlinkSync } from 'node:fs';
import { readdir, rename, rm, symlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { Fence, ReplicatedVolume, ReplicatedVolumeStatus } from '../api/replicated-volume.ts';
import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import { type Clock, metaTime, sleep, systemClock, withTimeout } from '../runtime/clock.ts';
import { describeError, isConflict } from '../runtime/kube.ts';

export type FenceOutcome = 'fenced' | 'superseded' | 'unreachable';
export const FENCE_EXIT: Record<FenceOutcome, number> = { fenced: 4, superseded: 6, unreachable: 1 };

/** How long one fence attempt keeps trying the API before the engine is told to stay frozen. */
export const FENCE_DEADLINE_MS = 15_000;

/** The volume reads and conditional status writes the fencer needs. */
export interface FenceApi {
  readVolume(namespace: string, name: string): Promise<ReplicatedVolume | undefined>;
  /** Merge patch of status fields, conditional on rv.metadata.resourceVersion (409 if it moved). */
  patchVolumeStatus(rv: ReplicatedVolume, status: { fence: Fence | null }): Promise<void>;
}

export type FenceDecision =
  | { kind: 'fenced' }
  | { kind: 'superseded'; primary: string | undefined; epoch: number | undefined }
  | { kind: 'write'; fence: Fence };

/**
 * Should `node`, Primary by `spec`, fence its peer now? Only while the volume's
 * status still names it the Primary at its epoch or an older one: otherwise it has
 * been superseded (the peer was promoted) and must stay frozen until demoted.
 */
export function decideFence(
  st: ReplicatedVolumeStatus | undefined,
  spec: ReplicatedVolumeReplicaSpec,
  node: string,
  now: Date,
): FenceDecision {
  const s = st ?? {};
  // Recorded already, and under the lock no lift can be in flight: the peer stays fenced.
  if (s.primary === node && (s.epoch ?? 0) <= spec.epoch && s.fence?.node === spec.peer.node) return { kind: 'fenced' };
  if (s.primary !== node || (s.epoch ?? 0) > spec.epoch)
    return { kind: 'superseded', primary: s.primary, epoch: s.epoch };
  return {
    kind: 'write',
    fence: {
      node: spec.peer.node,
      epoch: s.epoch ?? spec.epoch,
      by: node,
      time: metaTime(now),
      reason: `${node} lost its peer and writes on without it`,
    },
  };
}

/** May `node`'s agent lift the fence on its peer? Only its own volume's Primary, at the volume's epoch. */
export function mayLiftFence(
  st: ReplicatedVolumeStatus | undefined,
  spec: ReplicatedVolumeReplicaSpec,
  node: string,
): boolean {
  return st?.fence?.node === spec.peer.node && st.primary === node && (st.epoch ?? 0) === spec.epoch;
}

export class Fencer {
  readonly #api: FenceApi;
  readonly #node: string;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #locks = new Map<string, Promise<unknown>>();

  readonly #onChange: (what: 'fenced' | 'lifted', rv: ReplicatedVolume, fence: Fence) => Promise<void>;

  constructor(o: {
    api: FenceApi;
    node: string;
    log: Logger;
    clock?: Clock;
    onChange?: (what: 'fenced' | 'lifted', rv: ReplicatedVolume, fence: Fence) => Promise<void>;
  }) {
    this.#api = o.api;
    this.#onChange = o.onChange ?? (async () => undefined);
    this.#node = o.node;
    this.#log = o.log;
    this.#clock = o.clock ?? systemClock;
  }

  /** Runs fn after every earlier fence/lift of the same resource. */
  #serial<T>(resource: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(resource) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.#locks.set(resource, tail);
    void tail.then(() => {
      if (this.#locks.get(resource) === tail) this.#locks.delete(resource);
    });
    return next;
  }

  readVolume(namespace: string, name: string, timeoutMs = 5_000): Promise<ReplicatedVolume | undefined> {
    return withTimeout(this.#clock, this.#api.readVolume(namespace, name), timeoutMs, 'the API');
  }

  /** Records "the peer is Outdated" before this Primary acknowledges a write without it. */
  fencePeer(
    namespace: string,
    spec: ReplicatedVolumeReplicaSpec,
    deadlineMs = FENCE_DEADLINE_MS,
  ): Promise<FenceOutcome> {
    return this.#serial(spec.resource, async () => {
      const deadline = this.#clock.now().getTime() + deadlineMs;
      const log = this.#log.child({ resource: spec.resource, peer: spec.peer.node });
      for (let attempt = 1; ; attempt++) {
        try {
          const rv = await this.readVolume(namespace, spec.volume);
          if (!rv) return 'superseded';
          const d = decideFence(rv.status, spec, this.#node, this.#clock.now());
          if (d.kind === 'fenced') return 'fenced';
          if (d.kind === 'superseded') {
            log.error(
              { primary: d.primary, epoch: d.epoch, ours: spec.epoch },
              'Not fencing: this node is no longer the rightful Primary; I/O stays frozen',
            );
            return 'superseded';
          }
          await withTimeout(this.#clock, this.#api.patchVolumeStatus(rv, { fence: d.fence }), 5_000, 'the API');
          log.warn({ epoch: d.fence.epoch, attempt }, 'Fenced the peer in the API');
          await this.#onChange('fenced', rv, d.fence).catch(() => undefined);
          return 'fenced';
        } catch (err) {
          if (isConflict(err)) continue; // the volume moved: read again
          if (this.#clock.now().getTime() >= deadline) {
            log.error(
              { error: describeError(err), attempt },
              'Could not reach the API to fence the peer; I/O stays frozen',
            );
            return 'unreachable';
          }
          await sleep(this.#clock, 300);
        }
      }
    });
  }

  /**
   * The Primary's engine is Connected with an UpToDate peer: a fence on the peer
   * (from this agent, or the controller's on the old Primary after a failover) is lifted.
   * `stillTrue` re-checks the engine under the lock.
   */
  liftFence(namespace: string, spec: ReplicatedVolumeReplicaSpec, stillTrue: () => Promise<boolean>): Promise<boolean> {
    return this.#serial(spec.resource, async () => {
      const rv = await this.readVolume(namespace, spec.volume);
      if (!rv || !mayLiftFence(rv.status, spec, this.#node)) return false;
      const fence = rv.status!.fence!;
      if (!(await stillTrue())) return false;
      try {
        await withTimeout(this.#clock, this.#api.patchVolumeStatus(rv, { fence: null }), 5_000, 'the API');
      } catch (err) {
        if (isConflict(err)) return false; // look again next time
        throw err;
      }
      this.#log.info({ resource: spec.resource, peer: spec.peer.node }, 'The peer is UpToDate again; lifted its fence');
      await this.#onChange('lifted', rv, fence).catch(() => undefined);
      return true;
    });
  }
}

export type FenceAction = 'fence' | 'unfence' | 'rejoin';

/**
 * <run-dir>/agent.sock: the fence-peer handler (bin/tandem-fence-peer.js) sends
 * `{"resource": …}` and gets `{"exit": N}` back; as the unfence-peer handler it
 * sends `{"resource": …, "action": "unfence"}`, as the split-brain handler
 * `{"resource": …, "action": "rejoin"}`.
 */
export async function serveFenceRequests(
  path: string,
  onRequest: (resource: string, action: FenceAction) => Promise<number>,
  log: Logger,
): Promise<Server> {
  // Each agent listens on a socket of its own and points `path` at it with an atomic
  // rename of a symlink. A socket server unlinks its file when it closes: with one
  // shared path, an old agent still shutting down while the new one starts deleted
  // the new one's socket, and every handler run until the next restart failed with
  // ENOENT (found in e2e: promotions were refused "fence-peer handler exited 1").
  const dir = dirname(path);
  const prefix = `${basename(path)}.`;
  for (const f of await readdir(dir).catch(() => [] as string[]))
    if (f.startsWith(prefix) && !f.endsWith('.link')) await rm(join(dir, f), { force: true }); // earlier agents'
  const own = `${path}.${process.pid}-${randomBytes(4).toString('hex')}`;
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > 4096) {
        sock.destroy();
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let resource = '';
      let action: FenceAction | undefined = 'fence';
      try {
        const req = JSON.parse(buf.slice(0, nl)) as { resource?: unknown; action?: unknown };
        resource = String(req.resource ?? '');
        action =
          req.action === undefined ? 'fence' : (['fence', 'unfence', 'rejoin'] as const).find((a) => a === req.action);
      } catch {
        /* answered below */
      }
      sock.pause();
      void (resource && action ? onRequest(resource, action) : Promise.resolve(1))
        .catch((err: unknown) => {
          log.error({ error: describeError(err), resource }, 'Fence request failed');
          return 1;
        })
        .then((exit) => sock.end(`${JSON.stringify({ exit })}\n`));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(own, () => resolve());
  });
  const link = `${own}.link`;
  await symlink(basename(own), link);
  await rename(link, path);
  // Closing unlinks our socket; the name goes too unless a newer agent has taken it.
  server.once('close', () => {
    try {
      if (readlinkSync(path) === basename(own)) unlinkSync(path);
    } catch {
      /* gone already, or not a link */
    }
  });
  return server;
}
