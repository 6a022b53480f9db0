#!/usr/bin/env node
// The fence-peer handler the node agent configures for its engines:
//   handlers { fence-peer "node /app/bin/tandem-fence-peer.js /run/tandem/agent.sock"; }
// It asks the agent to fence the peer of $DRBD_RESOURCE in the Kubernetes API and
// exits with the agent's answer (DRBD's codes: 4 peer outdated → the engine resumes
// I/O; 6 this node was superseded → stays frozen). When the agent cannot be asked
// it exits 1 and the engine stays frozen: the agent fences on its next pass and
// runs `tandemadm resume-io`.
//
// The same script is the unfence-peer handler (DRBD 9's name; $TANDEM_HANDLER tells
// which one runs): the Primary's engine is Connected with an UpToDate peer again, so
// the agent lifts the peer's fence at once instead of at its next pass. Exit 0 when
// the agent answered, 1 when it could not be asked (it lifts on its next pass then).
//
// And it is the split-brain handler: the agent looks at the resource at once (the
// victim of a split brain after a failover reconnects with --discard-my-data, the
// Primary reconnects) instead of at its next pass. Exit 0 when the agent answered.
// Plain JavaScript: it must start fast and import nothing.
import { connect } from 'node:net';

const socketPath = process.argv[2] ?? '/run/tandem/agent.sock';
const resource = process.env.DRBD_RESOURCE;
if (!resource) {
  process.stderr.write(
    'tandem-fence-peer: DRBD_RESOURCE is not set (run me as a fence-peer, unfence-peer or split-brain handler)\n',
  );
  process.exit(1);
}
const action = { 'unfence-peer': 'unfence', 'split-brain': 'rejoin' }[process.env.TANDEM_HANDLER ?? ''];
const timer = setTimeout(() => {
  process.stderr.write('tandem-fence-peer: no answer from the node agent in 50 s\n');
  process.exit(1);
}, 50_000);
const sock = connect(socketPath);
let reply = '';
sock.setEncoding('utf8');
sock.on('connect', () => sock.write(`${JSON.stringify(action ? { resource, action } : { resource })}\n`));
sock.on('data', (d) => {
  reply += d;
});
sock.on('error', (err) => {
  process.stderr.write(`tandem-fence-peer: cannot ask the node agent at ${socketPath}: ${err.message}\n`);
  process.exit(1);
});
sock.on('end', () => {
  clearTimeout(timer);
  let exit = 1;
  try {
    exit = Number(JSON.parse(reply).exit);
  } catch {
    /* exit 1 */
  }
  if (action) {
    // [answered, not answered]: either way the agent's pass does it in the end.
    const said = {
      unfence: ["the peer's fence is lifted (or there was none)", "the fence stays until the agent's next pass"],
      rejoin: ['the node agent looks at the split brain now', 'the node agent looks at it on its next pass'],
    }[action];
    process.stdout.write(`tandem-fence-peer: ${resource}: ${said[exit === 0 ? 0 : 1]}\n`);
    process.exit(exit === 0 ? 0 : 1);
  }
  process.stdout.write(
    `tandem-fence-peer: ${resource}: ${exit === 4 ? 'peer fenced' : exit === 6 ? 'superseded; stay frozen' : 'not fenced; stay frozen'}\n`,
  );
  process.exit(Number.isInteger(exit) ? exit : 1);
});
