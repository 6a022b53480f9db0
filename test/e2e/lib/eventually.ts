// Polling assertions for a level-based world: retry until the assertion holds,
// and never trust a condition that was computed for an older spec.
import { setTimeout as sleep } from 'node:timers/promises';

export type EventuallyOptions = { timeoutMs?: number; intervalMs?: number; what?: string };

/**
 * Calls `fn` until it returns without throwing (use expect() inside) and
 * returns its result; after `timeoutMs` rethrows the last failure.
 */
export async function eventually<T>(fn: () => Promise<T> | T, opts: EventuallyOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 200;
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      return await fn();
    } catch (err) {
      if (Date.now() >= deadline) {
        const what = opts.what ? ` waiting for ${opts.what}` : '';
        const reason = err instanceof Error ? err.message : String(err);
        throw new Error(`Timed out after ${timeoutMs} ms (${attempts} attempts)${what}: ${reason}`, { cause: err });
      }
    }
    await sleep(intervalMs);
  }
}

export type Condition = {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  observedGeneration?: number;
};

export type ObjectWithConditions = {
  metadata?: { generation?: number; name?: string };
  status?: { observedGeneration?: number; conditions?: Condition[] };
};

/**
 * The condition `type` if the status describes the object's current generation:
 * the condition's own observedGeneration when it has one (metav1.Condition),
 * else status.observedGeneration. A stale or missing one throws, so that
 * `eventually(() => currentCondition(...))` waits for a fresh answer.
 */
export function currentCondition(obj: ObjectWithConditions, type: string): Condition {
  const generation = obj.metadata?.generation;
  if (generation === undefined) throw new Error(`${obj.metadata?.name ?? 'object'} has no metadata.generation`);
  const condition = obj.status?.conditions?.find((c) => c.type === type);
  if (!condition) throw new Error(`${obj.metadata?.name ?? 'object'} has no ${type} condition yet`);
  const observed = condition.observedGeneration ?? obj.status?.observedGeneration;
  if (observed !== generation) {
    throw new Error(
      `${obj.metadata?.name ?? 'object'} condition ${type} is for generation ${observed ?? 'unknown'}, object is at ${generation}`,
    );
  }
  return condition;
}

/** Waits until `get()` returns an object whose current-generation condition `type` has `status`. */
export async function eventuallyCondition<T extends ObjectWithConditions>(
  get: () => Promise<T>,
  type: string,
  status: string,
  opts: EventuallyOptions = {},
): Promise<T> {
  return eventually(
    async () => {
      const obj = await get();
      const c = currentCondition(obj, type);
      if (c.status !== status)
        throw new Error(`condition ${type} is ${c.status} (${c.reason ?? ''}: ${c.message ?? ''}), want ${status}`);
      return obj;
    },
    { what: `${type}=${status}`, ...opts },
  );
}
