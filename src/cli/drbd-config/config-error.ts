// A problem with a configuration file: a syntax error, an impossible value, or a
// configuration that does not describe this node. The message always starts with
// where the problem is (`file:line:column: ` or `file:line: `) so that it can be
// printed as is, like a compiler diagnostic.

/** A place in a configuration file; lines and columns count from 1. */
export interface SourceLocation {
  readonly file: string;
  readonly line: number;
  readonly column: number;
}

export function formatLocation(at: SourceLocation): string {
  return `${at.file}:${at.line}:${at.column}`;
}

export class ConfigError extends Error {
  readonly code = 'TANDEM_ERR_CONFIG';
  /** The message without the location prefix. */
  readonly detail: string;
  /** `file:line:column` (or `file:line` for a whole resource); undefined when no file is involved. */
  readonly where: string | undefined;

  constructor(detail: string, at?: SourceLocation | string) {
    const where = at === undefined ? undefined : typeof at === 'string' ? at : formatLocation(at);
    super(where === undefined ? detail : `${where}: ${detail}`);
    this.name = 'ConfigError';
    this.detail = detail;
    this.where = where;
  }
}
