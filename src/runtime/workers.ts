// The worker loop the controller and the agent share: take a key from the work
// queue, handle it, and decide what happens to the key from the result —
// success forgets its failures (and may ask to be looked at again later), a
// TerminalError waits for the next change, a conflict (409: someone wrote the
// object since it was read) and any other error come back with per-key backoff.
import type { Logger } from 'pino';
import { TerminalError } from './errors.ts';
import { describeError, isConflict } from './kube.ts';
import type { WorkQueue } from './work-queue.ts';

export type WorkResult = { requeueAfterMs?: number | undefined } | undefined;
export type WorkOutcome = 'success' | 'terminal' | 'conflict' | 'error';

export interface WorkersOptions {
  queue: WorkQueue;
  count: number;
  handle: (key: string) => Promise<WorkResult>;
  log: Logger;
  /** The log field the key goes under (rv, rvr). */
  keyField: string;
  onOutcome?: (outcome: WorkOutcome, key: string) => void;
  /** Starts a timer for one key; the returned function stops it (metrics). */
  time?: () => () => void;
}

/** Starts `count` workers; they end when the queue shuts down. */
export function runWorkers(o: WorkersOptions): Promise<void>[] {
  const worker = async (): Promise<void> => {
    for (let key = await o.queue.get(); key !== undefined; key = await o.queue.get()) {
      const end = o.time?.();
      try {
        const r = await o.handle(key);
        o.queue.forget(key);
        o.onOutcome?.('success', key);
        if (r?.requeueAfterMs !== undefined) o.queue.addAfter(key, r.requeueAfterMs);
      } catch (err) {
        if (err instanceof TerminalError) {
          o.queue.forget(key);
          o.onOutcome?.('terminal', key);
          o.log.error(
            { [o.keyField]: key, reason: err.reason, error: err.message },
            'Failed for good; waiting for a change',
          );
        } else if (isConflict(err)) {
          o.queue.addRateLimited(key);
          o.onOutcome?.('conflict', key);
          o.log.debug({ [o.keyField]: key }, 'Conflict; requeued');
        } else {
          const delayMs = o.queue.addRateLimited(key);
          o.onOutcome?.('error', key);
          o.log.warn({ [o.keyField]: key, error: describeError(err), delayMs }, 'Failed; retrying');
        }
      } finally {
        end?.();
        o.queue.done(key);
      }
    }
  };
  return Array.from({ length: o.count }, () => worker());
}
