import net from 'node:net';
import { once } from 'node:events';
import { FrameParser } from './wire.ts';
import { Connection, loadTls, sameHost } from './peer-link.ts';

describe('sameHost (the listener closes connections from any other address unread)', () => {
  test.each([
    ['127.0.0.2', '127.0.0.2', true],
    ['::ffff:127.0.0.2', '127.0.0.2', true],
    ['127.0.0.1', '127.0.0.2', false],
    ['fd00:0:0::1', 'fd00::1', true],
    ['FD00::1', 'fd00::1', true],
    ['fd00::2', 'fd00::1', false],
    [undefined, '127.0.0.2', false],
  ])('%s from a peer configured as %s: %s', (remote, configured, same) => {
    expect(sameHost(remote, configured)).toBe(same);
  });
});

describe('loadTls', () => {
  test('a missing file is named in the error', () => {
    expect(() => loadTls({ ca: '/nonexistent/ca.crt', cert: '/nonexistent/n.crt', key: '/nonexistent/n.key' })).toThrow(
      /^tls-ca \/nonexistent\/ca\.crt: ENOENT/,
    );
  });
});

describe('Connection.afterFlush (a mirrored write goes to the local disk after its DATA frame left)', () => {
  async function socketPair(): Promise<{ client: net.Socket; peer: net.Socket; done: () => void }> {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    const [peer] = await accepted;
    return {
      client,
      peer,
      done: () => {
        client.destroy();
        peer.destroy();
        server.close();
      },
    };
  }
  const opts = { pingIntMs: 60_000, pingTimeoutMs: 60_000 };

  test('runs once the queued frames were handed to the socket, and settles with its promise', async () => {
    const { client, done } = await socketPair();
    try {
      const conn = new Connection(client, new FrameParser(), 1, opts);
      conn.send([Buffer.alloc(4096, 1)]);
      expect(client.writableLength).toBe(4096); // corked: still ours
      let queuedWhenRun = -1;
      const v = await conn.afterFlush(async () => {
        queuedWhenRun = client.writableLength;
        return 7;
      });
      expect(v).toBe(7);
      expect(queuedWhenRun).toBe(0);
      await expect(conn.afterFlush(() => Promise.reject(new Error('EIO')))).rejects.toThrow('EIO');
      conn.close('BrokenPipe', 'test');
    } finally {
      done();
    }
  });

  test('runs even when the connection closed before the frames left (the local write must happen)', async () => {
    const { client, done } = await socketPair();
    try {
      const conn = new Connection(client, new FrameParser(), 1, opts);
      conn.send([Buffer.alloc(16)]);
      const p = conn.afterFlush(async () => 'written');
      conn.close('NetworkFailure', 'cut');
      await expect(p).resolves.toBe('written');
      // Nothing queued: at once.
      await expect(conn.afterFlush(async () => 'now')).resolves.toBe('now');
    } finally {
      done();
    }
  });
});
