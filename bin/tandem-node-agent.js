#!/usr/bin/env node
// The tandem node agent (DaemonSet). Runs the TypeScript sources directly (Node >= 24).
import './compile-cache.js';

const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`tandem-node-agent: Node.js >= 24 is required (this is ${process.version})\n`);
  process.exit(1);
}
const { main } = await import('../src/node-agent/main.ts');
await main(process.argv.slice(2));
