// Splits drbd.conf text into words, quoted strings and the punctuation `{ } ;`.
//
// drbd.conf(5) has no reserved characters beyond those: paths, addresses
// (`192.168.1.101:7789`, `[fd00::1]:7789`) and indexed meta disks (`/dev/sdb2[0]`)
// are single words. Comments run from `#` to the end of the line, as in DRBD, and
// also from `//` to the end of the line, because the tutorial's files use them.
import { ConfigError, type SourceLocation } from './config-error.ts';

export type TokenKind = 'word' | 'string' | '{' | '}' | ';' | 'eof';

export interface Token {
  readonly kind: TokenKind;
  /** The word, or the string with its escapes resolved; the character itself for punctuation. */
  readonly text: string;
  readonly at: SourceLocation;
}

const PUNCTUATION = new Set(['{', '}', ';']);
const ESCAPES: Record<string, string> = { n: '\n', t: '\t', r: '\r' };

function isSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || ch === '\f' || ch === '\v' || ch === '\uFEFF';
}

/** True where a word ends: whitespace, punctuation, a quote or the start of a comment. */
function endsWord(text: string, i: number): boolean {
  const ch = text.charAt(i);
  return i >= text.length || isSpace(ch) || PUNCTUATION.has(ch) || ch === '"' || ch === '#' || text.startsWith('//', i);
}

export function tokenize(text: string, file: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const here = (): SourceLocation => ({ file, line, column: i - lineStart + 1 });

  while (i < text.length) {
    const ch = text.charAt(i);
    if (ch === '\n') {
      i++;
      line++;
      lineStart = i;
    } else if (isSpace(ch)) {
      i++;
    } else if (ch === '#' || text.startsWith('//', i)) {
      while (i < text.length && text.charAt(i) !== '\n') i++;
    } else if (PUNCTUATION.has(ch)) {
      tokens.push({ kind: ch as '{' | '}' | ';', text: ch, at: here() });
      i++;
    } else if (ch === '"') {
      const at = here();
      let value = '';
      i++;
      for (;;) {
        const c = text.charAt(i);
        if (i >= text.length || c === '\n') {
          throw new ConfigError(
            `unterminated string: expected '"' before the end of the ${c === '\n' ? 'line' : 'file'}`,
            at,
          );
        }
        i++;
        if (c === '"') break;
        if (c === '\\' && i < text.length && text.charAt(i) !== '\n') {
          const escaped = text.charAt(i++);
          value += ESCAPES[escaped] ?? escaped;
        } else {
          value += c;
        }
      }
      tokens.push({ kind: 'string', text: value, at });
    } else {
      const at = here();
      const start = i;
      do i++;
      while (!endsWord(text, i));
      tokens.push({ kind: 'word', text: text.slice(start, i), at });
    }
  }
  tokens.push({ kind: 'eof', text: '', at: here() });
  return tokens;
}

/** How a token is named in "expected X but found Y" messages. */
export function describeToken(token: Token): string {
  switch (token.kind) {
    case 'eof':
      return 'end of file';
    case 'string':
      return JSON.stringify(token.text);
    default:
      return `'${token.text}'`;
  }
}
