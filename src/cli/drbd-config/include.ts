// `include "drbd.d/*.res";` — drbd.conf(5): the pattern is relative to the directory
// of the file that contains the include. A glob that matches nothing includes
// nothing (an empty drbd.d/ is normal); a plain path that is missing is an error.
import { globSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { ConfigError } from './config-error.ts';
import type { Token } from './tokenizer.ts';

/** How the parser reaches files, so that tests can serve them from memory. */
export interface FileAccess {
  readFile(path: string): string;
  /** Paths matching an absolute or relative glob pattern, in any order. */
  glob(pattern: string): string[];
}

export const nodeFileAccess: FileAccess = {
  readFile: (path) => readFileSync(path, 'utf8'),
  glob: (pattern) => globSync(pattern),
};

const GLOB_CHARACTERS = /[*?[]/;

/** The files an include statement names, in the order they are read (sorted, like glob(3)). */
export function includedFiles(pattern: Token, fromFile: string, access: FileAccess): string[] {
  const target = isAbsolute(pattern.text) ? pattern.text : join(dirname(fromFile), pattern.text);
  if (!GLOB_CHARACTERS.test(pattern.text)) return [target];
  return access.glob(target).sort();
}

/** Reads an included file; `stack` holds the resolved paths of the files being read. */
export function readIncluded(file: string, pattern: Token, stack: readonly string[], access: FileAccess): string {
  const resolved = resolve(file);
  if (stack.includes(resolved)) {
    const cycle = [...stack.slice(stack.indexOf(resolved)), resolved].join(' -> ');
    throw new ConfigError(`include cycle: ${cycle}`, pattern.at);
  }
  try {
    return access.readFile(file);
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    const reason = missing ? 'no such file' : (err as Error).message;
    throw new ConfigError(`cannot include '${pattern.text}': ${reason} (${file})`, pattern.at);
  }
}
