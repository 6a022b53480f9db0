// Time as a dependency: the controller, the agent and their runtime read the
// clock and set timers only through this, so the control-plane simulator
// (test/sim) can run them on virtual time and a seed replays exactly.
export type Timer = unknown;

export interface Clock {
  now(): Date;
  /** Calls fn after ms; the timer does not keep the process alive. */
  setTimer(fn: () => void, ms: number): Timer;
  clearTimer(t: Timer): void;
}

export const systemClock: Clock = {
  now: () => new Date(),
  setTimer: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimer: (t) => clearTimeout(t as NodeJS.Timeout),
};

export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimer(resolve, ms));
}

/** Rejects with `what` when p has not settled within ms (p itself is not cancelled). */
export function withTimeout<T>(clock: Clock, p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  return Promise.race([
    p,
    new Promise<never>((_r, reject) => {
      timer = clock.setTimer(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clock.clearTimer(timer));
}

/** metav1.Time: RFC 3339 to the second. */
export function metaTime(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, 'Z');
}
