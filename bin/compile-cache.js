// Imported first by each of tandem's long-lived entry points (tandemadm and so every
// engine, the engine host, the node agent, the controller, the CSI driver). Node 24 strips the
// TypeScript sources' types with a WebAssembly compiler it loads on first use; with
// the compile cache on, the stripped code (and V8's code cache) comes from disk and
// that compiler is never loaded: an idle engine measured 112 → 81 MiB RSS, 56 → 31
// MiB of its own (anonymous) memory (docs/design/2026-12-07-engine-memory.md).
//
// The cache sits with the code it caches (node_modules/.cache/tandem-compile): who
// can write there can change the code already. Entries are checked against the
// source's hash, so an edited file is compiled again, never served stale. Where the
// directory cannot be written (tandemadm run as another user, a read-only image),
// Node just compiles as before. NODE_COMPILE_CACHE overrides the place,
// NODE_DISABLE_COMPILE_CACHE=1 turns it off.
import * as nodeModule from 'node:module';
import { fileURLToPath } from 'node:url';

if (!process.env.NODE_DISABLE_COMPILE_CACHE && !process.env.NODE_COMPILE_CACHE)
  // (Older Node has no enableCompileCache; the entry point's version check speaks then.)
  nodeModule.enableCompileCache?.(fileURLToPath(new URL('../node_modules/.cache/tandem-compile', import.meta.url)));
