// Sockets that read with `onread`: each read lands in a buffer the caller chooses
// (a staging buffer it reuses, or the unfilled rest of a large payload), instead
// of a fresh 64 KiB allocation per read that the payload is then copied out of.
// Used by the NBD server and the peer link, the two streams that carry write data.
import net from 'node:net';

/**
 * The accepted connection as a socket that reads with `onread`. net.Server has no `onread`
 * option, so the server must be created with `pauseOnConnect: true` (nothing is read yet) and
 * the accepted handle moves into a new net.Socket that has one; the new socket takes over the
 * server's connection count, which its close releases.
 */
export function adoptWithOnread(accepted: net.Socket, server: net.Server, onread: net.OnReadOpts): net.Socket {
  const tcp = accepted.remoteAddress !== undefined;
  const internals = accepted as unknown as { _handle: unknown };
  const handle = internals._handle;
  internals._handle = null;
  const socket = new net.Socket({
    handle,
    allowHalfOpen: accepted.allowHalfOpen,
    readable: true,
    writable: true,
    onread,
  } as net.SocketConstructorOpts);
  const adopted = socket as unknown as { _server: unknown; server: unknown };
  adopted._server = server;
  adopted.server = server;
  if (tcp) socket.setNoDelay(true);
  socket.resume();
  return socket;
}
