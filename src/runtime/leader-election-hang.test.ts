// A leader whose renewal hangs (a pooled connection that died silently) must stop leading
// by the deadline, not when the request finally ends: a real HTTP server that answers the
// Lease's GET and never answers its PUT once told to.
import { once } from 'node:events';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { LeaderElector } from './leader-election.ts';

const NS = 'tandem-system';
const NAME = 'tandem-controller';

type LeaseServer = {
  server: http.Server;
  url: string;
  hang: () => void;
  /** PUTs are answered after this long (the write applies then, as a slow API server's). */
  delayPuts: (ms: number) => void;
  /** PUTs received and not yet answered. */
  pendingPuts: () => number;
  puts: () => number;
  holder: () => unknown;
};

async function leaseServer(): Promise<LeaseServer> {
  let lease: Record<string, unknown> | undefined;
  let hanging = false;
  let putDelayMs = 0;
  let pending = 0;
  let puts = 0;
  let rv = 1;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString();
    });
    req.on('end', () => {
      const reply = (code: number, obj: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(obj));
      };
      if (req.method === 'GET') {
        if (!lease) return reply(404, { kind: 'Status', code: 404, reason: 'NotFound' });
        return reply(200, lease);
      }
      if (req.method === 'POST' || req.method === 'PUT') {
        puts++;
        if (hanging) return; // never answered
        const write = () => {
          pending--;
          const next = JSON.parse(body) as Record<string, unknown>;
          // As the API server: a write must carry the resourceVersion it read.
          const read = (next.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
          const current = (lease?.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
          if (req.method === 'PUT' && read !== current)
            return reply(409, { kind: 'Status', code: 409, reason: 'Conflict' });
          lease = next;
          lease.metadata = { ...(lease.metadata as object), resourceVersion: String(rv++) };
          reply(req.method === 'POST' ? 201 : 200, lease);
        };
        pending++;
        if (putDelayMs > 0) setTimeout(write, putDelayMs);
        else write();
        return;
      }
      reply(405, {});
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    hang: () => {
      hanging = true;
    },
    delayPuts: (ms) => {
      putDelayMs = ms;
    },
    pendingPuts: () => pending,
    puts: () => puts,
    holder: () => (lease?.spec as { holderIdentity?: string } | undefined)?.holderIdentity,
  };
}

function electorOn(s: LeaseServer): LeaderElector {
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: s.url, skipTLSVerify: true }],
    users: [{ name: 'u' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return new LeaderElector({
    kc,
    namespace: NS,
    name: NAME,
    identity: 'a',
    leaseDurationSeconds: 3,
    retryPeriodMs: 200,
    log: pino({ level: 'silent' }),
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a leader whose renewal hangs steps down by the deadline', async () => {
  const s = await leaseServer();
  const elector = electorOn(s);
  try {
    let stoppedAt: number | undefined;
    const stopped = new Promise<void>((resolve) => {
      void elector
        .run(() => {
          stoppedAt = Date.now();
          resolve();
        })
        .then(() => {
          expect(elector.leading).toBe(true);
        });
    });
    // Leading, renewing: then every renewal hangs.
    await new Promise((r) => setTimeout(r, 700));
    expect(elector.leading).toBe(true);
    const putsBefore = s.puts();
    s.hang();
    const hungAt = Date.now();
    await stopped;
    expect(elector.leading).toBe(false);
    // The deadline is 2/3 of the 3 s Lease, counted from the last renewal that succeeded
    // (at most one retry period before the hang).
    expect(stoppedAt! - hungAt).toBeLessThan(2_000 + 1_000);
    // It stepped down while a renewal was still hanging.
    expect(s.puts()).toBe(putsBefore + 1);
  } finally {
    await elector.release().catch(() => {});
    s.server.closeAllConnections();
    s.server.close();
  }
});

test('shutting down: no renewal after stopRenewing, then the Lease is handed back', async () => {
  const s = await leaseServer();
  const elector = electorOn(s);
  try {
    await elector.run(() => {});
    expect(s.holder()).toBe('a');
    elector.stopRenewing();
    await sleep(100); // a renewal in flight when it stopped may still land
    const puts = s.puts();
    await sleep(1_000); // five retry periods
    expect(s.puts()).toBe(puts);
    expect(elector.leading).toBe(true); // the Lease is still ours until it expires or goes back
    await elector.release();
    expect(s.holder()).toBe('');
    expect(elector.leading).toBe(false);
  } finally {
    s.server.closeAllConnections();
    s.server.close();
  }
});

test('handing the Lease back gives up when the API server does not answer', async () => {
  const s = await leaseServer();
  const elector = electorOn(s);
  try {
    await elector.run(() => {});
    elector.stopRenewing();
    s.hang();
    const started = Date.now();
    await elector.release(300);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(s.holder()).toBe('a'); // it expires by itself
  } finally {
    s.server.closeAllConnections();
    s.server.close();
  }
});

test('handing the Lease back waits for a renewal still under way (else its write conflicts and the Lease stays)', async () => {
  const s = await leaseServer();
  const elector = electorOn(s);
  try {
    await elector.run(() => {});
    s.delayPuts(300);
    // Shut down while a renewal's write is at the API server.
    while (s.pendingPuts() === 0) await sleep(5);
    elector.stopRenewing();
    await elector.release();
    expect(s.holder()).toBe('');
  } finally {
    s.server.closeAllConnections();
    s.server.close();
  }
});
