import { ConfigError } from './config-error.ts';
import { tokenize, type Token } from './tokenizer.ts';

const summary = (tokens: Token[]): string[] => tokens.map((t) => `${t.at.line}:${t.at.column} ${t.kind} ${t.text}`);

describe('tokenize', () => {
  it('splits words, strings and punctuation and records where each starts', () => {
    const tokens = tokenize('resource mysql {\n\tmeta-disk /dev/sdb2[0];\n  address ipv6 [fd00::1]:7789;\n}', 'f');
    expect(summary(tokens)).toEqual([
      '1:1 word resource',
      '1:10 word mysql',
      '1:16 { {',
      '2:2 word meta-disk',
      '2:12 word /dev/sdb2[0]',
      '2:24 ; ;',
      '3:3 word address',
      '3:11 word ipv6',
      '3:16 word [fd00::1]:7789',
      '3:30 ; ;',
      '4:1 } }',
      '4:2 eof ',
    ]);
  });

  it('skips # and // comments to the end of the line, but keeps single slashes in paths', () => {
    const text = '# heading\nprotocol C; // 使用协议；\n// whole line\ndisk /dev/sdb1;# trailing\n';
    expect(tokenize(text, 'f').map((t) => t.text)).toEqual(['protocol', 'C', ';', 'disk', '/dev/sdb1', ';', '']);
  });

  it('resolves escapes in quoted strings and keeps semicolons inside them', () => {
    const [token] = tokenize(String.raw`"echo \"a\\b\"; reboot -f\tnow\n"`, 'f');
    expect(token).toMatchObject({ kind: 'string', text: 'echo "a\\b"; reboot -f\tnow\n' });
  });

  it.each([
    ['at the end of the line', 'x "abc\ny', "f:1:3: unterminated string: expected '\"' before the end of the line"],
    ['at the end of the file', '\n  "abc\\"', "f:2:3: unterminated string: expected '\"' before the end of the file"],
  ])('rejects a string unterminated %s', (_name, text, message) => {
    let caught: unknown;
    try {
      tokenize(text, 'f');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).code).toBe('TANDEM_ERR_CONFIG');
    expect((caught as ConfigError).message).toBe(message);
  });
});
