#!/usr/bin/env node
// The tandem engine host (a DaemonSet pod per node): the engines of the node run in it.
import './compile-cache.js';

const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`tandem-engine-host: Node.js >= 24 is required (this is ${process.version})\n`);
  process.exit(1);
}
const { main } = await import('../src/engine-host/main.ts');
await main(process.argv.slice(2));
