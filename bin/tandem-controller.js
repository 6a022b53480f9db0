#!/usr/bin/env node
// The tandem controller (Deployment). Runs the TypeScript sources directly (Node >= 24).
import './compile-cache.js';

const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`tandem-controller: Node.js >= 24 is required (this is ${process.version})\n`);
  process.exit(1);
}
const { main } = await import('../src/controller/main.ts');
await main(process.argv.slice(2));
