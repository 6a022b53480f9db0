// Old bugs, put back on demand, to check that the simulator finds them
// (`npm run sim -- --mutant NAME`). Each patches the engine's classes for the
// duration of one round and restores them after.
//
//   ack-before-durable               The Secondary acknowledges an epoch as soon as
//                                    it is closed, before its writes are on disk and
//                                    synced: the Primary forgets them (the bug of the
//                                    first engine: WRITE_ACK after write() into the
//                                    page cache ended the Primary's interest).
//   no-new-generation-on-disconnect  A Primary that parts with `disconnect` does not
//                                    start a new data generation (the bug found with
//                                    tandemadm: a later split brain synced silently).
import { Engine } from '../replication/engine.ts';
import { encodeMessage } from '../replication/messages.ts';
import { Receiver } from '../replication/receiver.ts';
import type { Effect } from '../replication/state.ts';
import type { PeerConnection } from '../replication/world.ts';

export const MUTANTS = ['ack-before-durable', 'no-new-generation-on-disconnect'] as const;
export type Mutant = (typeof MUTANTS)[number];

type Patch = () => () => void;

function patch<T extends object, K extends keyof T>(target: T, key: K, replacement: T[K]): () => void {
  const original = target[key];
  target[key] = replacement;
  return () => {
    target[key] = original;
  };
}

const PATCHES: Record<Mutant, Patch> = {
  'ack-before-durable': () => {
    const writes = new WeakMap<Receiver, number>();
    const proto = Receiver.prototype;
    const onData = proto.onData;
    const onConnected = proto.onConnected;
    const undo = [
      patch(proto, 'onConnected', function (this: Receiver) {
        writes.set(this, 0);
        onConnected.call(this);
      }),
      patch(proto, 'onData', function (this: Receiver, ...args: Parameters<Receiver['onData']>) {
        writes.set(this, (writes.get(this) ?? 0) + 1);
        onData.apply(this, args);
      }),
      patch(proto, 'onBarrier', function (this: Receiver, c: PeerConnection, epoch: number) {
        const n = writes.get(this) ?? 0;
        writes.set(this, 0);
        c.send(encodeMessage({ type: 'barrier-ack', epoch, writes: n, errno: 0 }));
      }),
    ];
    return () => {
      for (const u of undo) u();
    };
  },
  'no-new-generation-on-disconnect': () => {
    const proto = Engine.prototype as unknown as { runEffects: (effects: Effect[], cause: string) => void };
    const runEffects = proto.runEffects;
    return patch(proto, 'runEffects', function (this: Engine, effects: Effect[], cause: string) {
      runEffects.call(
        this,
        effects.filter((e) => !(e.kind === 'new-generation' && cause === 'disconnect')),
        cause,
      );
    });
  },
};

/** Applies the mutants; returns what undoes them. */
export function applyMutants(ms: readonly Mutant[]): () => void {
  const undo = ms.map((m) => PATCHES[m]());
  return () => {
    for (const u of undo.reverse()) u();
  };
}
