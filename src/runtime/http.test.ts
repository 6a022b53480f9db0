import { Registry, Counter } from 'prom-client';
import { startHealthServer } from './http.ts';

test('healthz, readyz and metrics answer over HTTP', async () => {
  const registry = new Registry();
  new Counter({ name: 'tandem_test_total', help: 'a test counter', registers: [registry] }).inc(3);
  let ready = false;
  const s = await startHealthServer({ port: 0, host: '127.0.0.1', registry, ready: () => ready });
  try {
    const get = (p: string) => fetch(`http://127.0.0.1:${s.port}${p}`);
    expect((await get('/healthz')).status).toBe(200);
    expect((await get('/readyz')).status).toBe(503);
    ready = true;
    expect((await get('/readyz')).status).toBe(200);
    expect(await (await get('/metrics')).text()).toContain('tandem_test_total 3');
    expect((await get('/nope')).status).toBe(404);
  } finally {
    await s.close();
  }
});
