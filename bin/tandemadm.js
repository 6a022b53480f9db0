#!/usr/bin/env node
// tandem runs its TypeScript sources directly: Node 24 strips types natively,
// so there is no build output that can go stale. See docs/design/2026-11-25-no-build-step.md.
import './compile-cache.js';

const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(
    `tandemadm: Node.js >= 24 is required (this is ${process.version}); run it with 'npx tandemadm' from the project or install Node 24\n`,
  );
  process.exit(1);
}
await import('../src/cli/main.ts');
