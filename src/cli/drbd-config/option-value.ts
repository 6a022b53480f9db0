// One `name [value];` option from a section, with the conversions the option tables
// need. Each conversion reports a bad value at the value's own location.
import { ConfigError } from './config-error.ts';
import { describeToken, type Token } from './tokenizer.ts';
import { parseInteger, parseScaled } from './units.ts';

export class OptionValue {
  readonly name: Token;
  readonly value: Token | undefined;

  constructor(name: Token, value: Token | undefined) {
    this.name = name;
    this.value = value;
  }

  /** The value token; an option that needs one and has none is an error. */
  required(): Token {
    if (this.value === undefined) throw new ConfigError(`'${this.name.text}' needs a value`, this.name.at);
    return this.value;
  }

  text(): string {
    return this.required().text;
  }

  /** `allow-two-primaries;` and `allow-two-primaries yes;` are true, `… no;` is false. */
  flag(): boolean {
    if (this.value === undefined || this.value.text === 'yes') return true;
    if (this.value.text === 'no') return false;
    throw new ConfigError(
      `'${this.name.text}' takes 'yes', 'no' or no value, not ${describeToken(this.value)}`,
      this.value.at,
    );
  }

  /** For the string-valued sections (handlers, startup, options): a bare flag reads as "yes". */
  textOrYes(): string {
    return this.value === undefined ? 'yes' : this.value.text;
  }

  integer(): number {
    const value = this.required();
    const n = parseInteger(value.text);
    if (n === undefined)
      throw new ConfigError(`expected a number for '${this.name.text}' but found ${describeToken(value)}`, value.at);
    return n;
  }

  /** A size or rate in bytes; see units.ts. */
  scaled(defaultUnit: number): number {
    const value = this.required();
    const n = parseScaled(value.text, defaultUnit);
    if (n === undefined) {
      throw new ConfigError(
        `expected a number with an optional unit (s, K, M, G) for '${this.name.text}' but found ${describeToken(value)}`,
        value.at,
      );
    }
    return n;
  }

  oneOf<T extends string>(choices: readonly T[], alsoAllowed?: RegExp): T {
    const value = this.required();
    if ((choices as readonly string[]).includes(value.text) || alsoAllowed?.test(value.text)) return value.text as T;
    throw new ConfigError(
      `'${this.name.text}' must be one of ${choices.join(', ')} but found ${describeToken(value)}`,
      value.at,
    );
  }
}
