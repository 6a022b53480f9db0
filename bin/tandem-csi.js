#!/usr/bin/env node
// The CSI driver (src/csi/main.ts). Node 24 runs the TypeScript sources directly.
import './compile-cache.js';

const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`tandem-csi: Node.js >= 24 is required (this is ${process.version})\n`);
  process.exit(1);
}
const { main } = await import('../src/csi/main.ts');
await main(process.argv.slice(2));
