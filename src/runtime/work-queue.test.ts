import { WorkQueue } from './work-queue.ts';

function fakeTimers() {
  const timers: { fn: () => void; ms: number; id: number }[] = [];
  let next = 0;
  return {
    timers,
    setTimer: (fn: () => void, ms: number) => {
      const t = { fn, ms, id: next++ };
      timers.push(t);
      return t;
    },
    clearTimer: (t: unknown) => {
      const i = timers.indexOf(t as never);
      if (i >= 0) timers.splice(i, 1);
    },
    fire: () => {
      for (const t of timers.splice(0)) t.fn();
    },
  };
}

test('a key added many times while waiting is handed out once', async () => {
  const q = new WorkQueue();
  q.add('a');
  q.add('b');
  q.add('a');
  expect(q.length).toBe(2);
  expect(await q.get()).toBe('a');
  expect(await q.get()).toBe('b');
});

test('a key added while it is processed is queued again after done, not handed to a second worker', async () => {
  const q = new WorkQueue();
  q.add('a');
  const k = await q.get();
  q.add('a');
  expect(q.length).toBe(0);
  const second = q.get();
  q.done(k!);
  expect(await second).toBe('a');
});

test('a waiting worker gets the next key at once', async () => {
  const q = new WorkQueue();
  const waiting = q.get();
  q.add('x');
  expect(await waiting).toBe('x');
  expect(q.busy).toBe(1);
});

test('failures back off exponentially per key, capped; forget resets', () => {
  const t = fakeTimers();
  const q = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 1000, ...t });
  expect(
    [1, 2, 3, 4, 5].map(() => {
      const d = q.addRateLimited('a');
      t.fire();
      return d;
    }),
  ).toEqual([100, 200, 400, 800, 1000]);
  expect(q.addRateLimited('b')).toBe(100);
  q.forget('a');
  expect(q.failures('a')).toBe(0);
  expect(q.addRateLimited('a')).toBe(100);
});

test('addAfter keeps one pending timer per key, the one that fires first, and adds when it fires', () => {
  const t = fakeTimers();
  const q = new WorkQueue(t);
  q.addAfter('a', 500);
  q.addAfter('a', 100);
  expect(t.timers.map((x) => x.ms)).toEqual([100]);
  q.addAfter('a', 300);
  expect(t.timers.map((x) => x.ms)).toEqual([100]);
  t.fire();
  expect(q.length).toBe(1);
});

test('a short recheck is not held back by a long backstop asked for before it', () => {
  let now = 0;
  const timers: { fn: () => void; at: number }[] = [];
  const clock = {
    now: () => new Date(now),
    setTimer: (fn: () => void, ms: number) => {
      const t = { fn, at: now + ms };
      timers.push(t);
      return t;
    },
    clearTimer: (t: unknown) => {
      const i = timers.indexOf(t as never);
      if (i >= 0) timers.splice(i, 1);
    },
  };
  const q = new WorkQueue({ clock });
  q.addAfter('rv', 30_000); // the Ready volume's backstop
  now = 10_000;
  q.addAfter('rv', 1_000); // a failover clock that runs out in 1 s
  now = 11_000;
  for (const t of timers.filter((x) => x.at <= now)) t.fn();
  expect(q.length).toBe(1);
});

test('shutDown releases waiting workers and drops timers', async () => {
  const t = fakeTimers();
  const q = new WorkQueue(t);
  const waiting = q.get();
  q.addAfter('a', 100);
  q.shutDown();
  expect(await waiting).toBeUndefined();
  expect(t.timers).toHaveLength(0);
  q.add('b');
  expect(await q.get()).toBeUndefined();
});
