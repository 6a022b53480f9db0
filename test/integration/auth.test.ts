// The peer link refuses a peer with the wrong shared secret, a peer of another
// resource, and a hostile client that skips the handshake; nothing any of them
// sends reaches a disk.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { Pair, type NodeName } from './support/pair.ts';
import { encodeData, encodeJson, P } from '../../src/replication/wire.ts';
import { jest } from '@jest/globals';

jest.setTimeout(180_000);

const SECRET = 'cram-hmac-alg sha256;';

async function digest(pair: Pair, n: NodeName): Promise<string> {
  return createHash('sha256')
    .update(await readFile(pair.disk(n)))
    .digest('hex');
}

async function startBoth(pair: Pair): Promise<void> {
  await pair.ok('master', 'create-md', pair.resourceOf('master'));
  await pair.ok('backup', 'create-md', pair.resourceOf('backup'));
  await pair.ok('master', 'up', pair.resourceOf('master'));
  await pair.ok('master', '--', '--force', 'primary', pair.resourceOf('master'));
  await pair.ok('backup', 'up', pair.resourceOf('backup'));
}

describe('peer authentication', () => {
  test('the right secret: both sides go WFConnection → WFReportParams → Connected, and no state fact is refused', async () => {
    const pair = await Pair.create({
      perNodeNet: {
        master: `${SECRET} shared-secret "right-secret";`,
        backup: `${SECRET} shared-secret "right-secret";`,
      },
    });
    try {
      await startBoth(pair);
      await pair.waitInSync();
      for (const n of ['master', 'backup'] as const) {
        const log = await readFile(pair.logPath(n), 'utf8');
        // The listening side (backup: 127.0.0.3 sorts after 127.0.0.2) used to jump from
        // WFConnection to Connected, which the state rules refuse ("Refused a state fact").
        expect(log).not.toMatch(/Refused a state fact/);
        expect(log).toMatch(/conn\(WFConnection->WFReportParams\)/);
        expect(log).toMatch(/conn\(WFReportParams->(Connected|WFBitMapS|WFBitMapT)\)/);
      }
    } finally {
      await pair.destroy();
    }
  });

  test('a peer with the wrong shared secret is refused and both disks stay untouched', async () => {
    const pair = await Pair.create({
      perNodeNet: {
        master: `${SECRET} shared-secret "right-secret";`,
        backup: `${SECRET} shared-secret "wrong-secret";`,
      },
    });
    try {
      const before = await digest(pair, 'backup');
      await startBoth(pair);
      const m = await pair.waitFor(
        'master',
        (s) => /Authentication of peer failed|peer refused us/.test(s.lastError ?? ''),
        20_000,
        'an authentication failure',
      );
      await new Promise((r) => setTimeout(r, 1500));
      for (const n of ['master', 'backup'] as const) {
        const s = await pair.status(n);
        expect(s.cstate).toMatch(/WFConnection|WFReportParams|Unconnected/);
        expect(s.counters.nr).toBe(0);
        expect(s.counters.dw).toBe(0);
      }
      expect(m.lastError).toBeDefined();
      expect(await digest(pair, 'backup')).toBe(before);
      expect(await readFile(pair.logPath('backup'), 'utf8')).toMatch(/Authentication of peer failed|peer refused us/);
    } finally {
      await pair.destroy();
    }
  });

  test('the right shared secret connects and syncs', async () => {
    const net = `${SECRET} shared-secret "same-secret";`;
    const pair = await Pair.create({ perNodeNet: { master: net, backup: net } });
    try {
      await startBoth(pair);
      await pair.waitInSync();
      expect(await digest(pair, 'backup')).not.toBe('');
    } finally {
      await pair.destroy();
    }
  });

  test('a peer configured for another resource is refused', async () => {
    const pair = await Pair.create({ perNodeResource: { backup: 'other' } });
    try {
      await startBoth(pair);
      const m = await pair.waitFor(
        'master',
        (s) =>
          (s.lastError ?? '').includes("peer is for resource 'other'") ||
          (s.lastError ?? '').includes('peer refused us'),
        20_000,
        'a wrong-resource refusal',
      );
      expect(m.cstate).not.toBe('Connected');
      expect((await pair.status('backup')).counters.nr).toBe(0);
    } finally {
      await pair.destroy();
    }
  });

  test('a client that skips the handshake is dropped before anything reaches the disk', async () => {
    const pair = await Pair.create({
      perNodeNet: { master: `${SECRET} shared-secret "s";`, backup: `${SECRET} shared-secret "s";` },
    });
    try {
      await pair.ok('backup', 'create-md', 'mysql');
      await pair.ok('backup', 'up', 'mysql'); // backup (127.0.0.3) is the listening side
      const before = await digest(pair, 'backup');
      // From the peer's own address: a stranger's address is closed unread before any handshake.
      const sock = net.connect({ host: '127.0.0.3', port: pair.port, localAddress: '127.0.0.2' });
      await new Promise<void>((r) => sock.once('connect', () => r()));
      const closed = new Promise<void>((r) => sock.once('close', () => r()));
      sock.on('error', () => {});
      sock.resume();
      // A forged PARAMS and a DATA frame aimed at block 0, without CHALLENGE/AUTH/HELLO.
      sock.write(Buffer.concat(encodeJson(P.PARAMS, { reply: false })));
      sock.write(Buffer.concat(encodeData(1, 0, Buffer.alloc(4096, 0xee), 0)));
      await closed;
      const s = await pair.status('backup');
      expect(s.counters.dw).toBe(0);
      expect(s.lastError).toMatch(/expected CHALLENGE/);
      expect(await digest(pair, 'backup')).toBe(before);
      // and the real peer can still connect afterwards
      await pair.ok('master', 'create-md', 'mysql');
      await pair.ok('master', 'up', 'mysql');
      await pair.waitFor('master', (x) => x.cstate === 'Connected', 20_000, 'Connected after the rogue client');
    } finally {
      await pair.destroy();
    }
  });
});
