// Entry points: parse configuration text (includes read through `FileAccess`), or
// load a file from disk. Both return the typed config and the warnings about
// options that tandem ignores.
import { readFile } from 'node:fs/promises';
import type { TandemConfig } from '../../api/config.ts';
import { ConfigError } from './config-error.ts';
import type { ConfigDraft } from './draft.ts';
import { emptySettings } from './draft.ts';
import { nodeFileAccess, type FileAccess } from './include.ts';
import { normalize } from './normalize.ts';
import { parseInto } from './parser.ts';

export interface ParseResult {
  config: TandemConfig;
  /** `file:line:column: ignoring net option 'fencing': not implemented by tandem`, one per ignored option. */
  warnings: string[];
}

export type ParseOptions = Partial<FileAccess>;

/** Parses drbd.conf text; `fileName` names it in messages and anchors relative includes. */
export function parseConfigText(text: string, fileName: string, options: ParseOptions = {}): ParseResult {
  const access: FileAccess = { ...nodeFileAccess, ...options };
  const draft: ConfigDraft = { globalOptions: {}, common: emptySettings(), resources: [], warnings: [] };
  parseInto(draft, text, fileName, access);
  return { config: normalize(draft), warnings: draft.warnings };
}

export async function loadConfigFile(path: string): Promise<ParseResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new ConfigError(`cannot read configuration file: ${reason}`, path);
  }
  return parseConfigText(text, path);
}
