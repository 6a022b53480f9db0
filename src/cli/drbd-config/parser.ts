// A recursive-descent parser for drbd.conf (DRBD 8.4), one function per construct:
//
//   file     := ( global | common | resource | include | skip )*
//   global   := 'global' '{' option* '}'
//   common   := 'common' '{' ( 'protocol' X ';' | section )* '}'
//   resource := 'resource' NAME '{' ( 'protocol' X ';' | section | host-statement | on )* '}'
//   on       := 'on' HOST '{' host-statement* '}'
//   section  := ( 'net' | 'disk' | 'syncer' | 'handlers' | 'startup' | 'options' ) '{' option* '}'
//   option   := NAME VALUE? ';'
//   host-statement := device | disk | meta-disk | flexible-meta-disk | address
//   include  := 'include' PATTERN ';'
//   skip     := 'skip' WORD* '{' anything balanced '}'      (drbdadm's way to comment out a block)
//
// It fills a ConfigDraft; merging `common` and checking each resource is normalize.ts's job.
import { resolve } from 'node:path';
import { ResourceConfig } from '../../api/config.ts';
import { isAddressFamily, parseAddress } from './address.ts';
import { ConfigError, formatLocation } from './config-error.ts';
import type { ConfigDraft, HostDraft, OnSectionDraft, ResourceDraft, SettingsDraft } from './draft.ts';
import { emptySettings } from './draft.ts';
import { includedFiles, readIncluded, type FileAccess } from './include.ts';
import { OptionValue } from './option-value.ts';
import { applySectionOption, isSectionName, parseProtocol, type SectionName } from './section-options.ts';
import { describeToken, tokenize, type Token, type TokenKind } from './tokenizer.ts';
import { parseInteger } from './units.ts';

const SETTINGS_STATEMENTS = ['protocol', 'net', 'disk', 'syncer', 'handlers', 'startup', 'options'];
const HOST_STATEMENTS = ['device', 'disk', 'meta-disk', 'address'];
const RESOURCE_STATEMENTS = [...new Set(['on', ...SETTINGS_STATEMENTS, ...HOST_STATEMENTS])];

/** `a, b or c` */
const alternatives = (choices: readonly string[]): string => `${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}`;

export function parseInto(
  draft: ConfigDraft,
  text: string,
  file: string,
  access: FileAccess,
  stack: readonly string[] = [],
): void {
  new Parser(draft, tokenize(text, file), file, access, [...stack, resolve(file)]).parseFile();
}

const words = (tokens: readonly Token[]): string => tokens.map((t) => t.text).join(' ');

class Parser {
  readonly draft: ConfigDraft;
  readonly tokens: readonly Token[];
  readonly file: string;
  readonly access: FileAccess;
  readonly stack: readonly string[];
  pos = 0;

  constructor(
    draft: ConfigDraft,
    tokens: readonly Token[],
    file: string,
    access: FileAccess,
    stack: readonly string[],
  ) {
    this.draft = draft;
    this.tokens = tokens;
    this.file = file;
    this.access = access;
    this.stack = stack;
  }

  // --- tokens ---------------------------------------------------------------

  peek(): Token {
    // tokenize() always ends with an 'eof' token, and next() never moves past it.
    return this.tokens[this.pos] as Token;
  }

  next(): Token {
    const token = this.peek();
    if (token.kind !== 'eof') this.pos++;
    return token;
  }

  fail(expected: string, token: Token): never {
    throw new ConfigError(`expected ${expected} but found ${describeToken(token)}`, token.at);
  }

  expect(kind: TokenKind, expected: string): Token {
    const token = this.peek();
    if (token.kind !== kind) this.fail(expected, token);
    return this.next();
  }

  /** A word or a quoted string: paths, names and option values may be either. */
  value(expected: string): Token {
    const token = this.peek();
    if (token.kind !== 'word' && token.kind !== 'string') this.fail(expected, token);
    return this.next();
  }

  endStatement(statement: readonly Token[]): void {
    this.expect(';', `';' after '${words(statement)}'`);
  }

  /** Parses `{ item* }` after `header`, calling `item` with each statement's first word. */
  block(header: readonly Token[], item: (keyword: Token) => void): void {
    const open = this.expect('{', `'{' after '${words(header)}'`);
    for (;;) {
      const token = this.peek();
      if (token.kind === '}') {
        this.next();
        return;
      }
      if (token.kind === 'eof') {
        this.fail(`'}' to close '${words(header)}' (opened at ${formatLocation(open.at)})`, token);
      }
      item(this.expect('word', `a statement in '${words(header)}'`));
    }
  }

  // --- top level ------------------------------------------------------------

  parseFile(): void {
    while (this.peek().kind !== 'eof') {
      const keyword = this.expect('word', "'global', 'common', 'resource' or 'include'");
      switch (keyword.text) {
        case 'global':
          this.parseGlobal(keyword);
          break;
        case 'common':
          this.block([keyword], (item) => this.parseSettingsStatement(this.draft.common, item, 'common'));
          break;
        case 'resource':
          this.parseResource(keyword);
          break;
        case 'include':
          this.parseInclude(keyword);
          break;
        case 'skip':
          this.parseSkip(keyword);
          break;
        default:
          this.fail("'global', 'common', 'resource' or 'include'", keyword);
      }
    }
  }

  parseGlobal(keyword: Token): void {
    this.block([keyword], (name) => {
      const option = this.parseOption(name);
      if (name.text === 'usage-count') this.draft.usageCount = option.text();
      else this.draft.globalOptions[name.text] = option.textOrYes();
    });
  }

  parseInclude(keyword: Token): void {
    const pattern = this.value("a file name or pattern after 'include'");
    this.endStatement([keyword, pattern]);
    for (const file of includedFiles(pattern, this.file, this.access)) {
      const text = readIncluded(file, pattern, this.stack, this.access);
      parseInto(this.draft, text, file, this.access, this.stack);
    }
  }

  parseSkip(keyword: Token): void {
    while (this.peek().kind === 'word' || this.peek().kind === 'string') this.next();
    this.expect('{', `'{' after '${keyword.text}'`);
    for (let depth = 1; depth > 0; ) {
      const token = this.next();
      if (token.kind === 'eof')
        this.fail(`'}' to close '${keyword.text}' (opened at ${formatLocation(keyword.at)})`, token);
      if (token.kind === '{') depth++;
      if (token.kind === '}') depth--;
    }
  }

  // --- sections and options -------------------------------------------------

  /** `protocol X;` or a `net {}`-style section: what `common` and `resource` share. Returns false for anything else. */
  tryParseSettingsStatement(settings: SettingsDraft, keyword: Token): boolean {
    if (keyword.text === 'protocol') {
      const value = this.value("a protocol (A, B or C) after 'protocol'");
      settings.protocol = parseProtocol(value);
      this.endStatement([keyword, value]);
      return true;
    }
    if (isSectionName(keyword.text) && (keyword.text !== 'disk' || this.peek().kind === '{')) {
      this.parseSection(keyword.text, keyword, settings);
      return true;
    }
    return false;
  }

  parseSettingsStatement(settings: SettingsDraft, keyword: Token, where: string): void {
    if (!this.tryParseSettingsStatement(settings, keyword)) {
      throw new ConfigError(
        `unknown statement '${keyword.text}' in ${where} (expected ${alternatives(SETTINGS_STATEMENTS)})`,
        keyword.at,
      );
    }
  }

  parseSection(section: SectionName, keyword: Token, settings: SettingsDraft): void {
    this.block([keyword], (name) => {
      const warning = applySectionOption(section, settings, this.parseOption(name));
      if (warning !== undefined) this.draft.warnings.push(warning);
    });
  }

  /** `name;` or `name value;` — every DRBD option has at most one value. */
  parseOption(name: Token): OptionValue {
    const next = this.peek();
    const value = next.kind === 'word' || next.kind === 'string' ? this.next() : undefined;
    this.endStatement(value ? [name, value] : [name]);
    return new OptionValue(name, value);
  }

  // --- resources ------------------------------------------------------------

  parseResource(keyword: Token): void {
    const name = this.value("a resource name after 'resource'");
    if (!ResourceConfig.shape.name.safeParse(name.text).success) {
      throw new ConfigError(`invalid resource name ${describeToken(name)}: use letters, digits and _ . + -`, name.at);
    }
    const earlier = this.draft.resources.find((r) => r.name === name.text);
    if (earlier) {
      throw new ConfigError(`resource ${name.text} is defined twice (first at ${formatLocation(earlier.at)})`, name.at);
    }
    const resource: ResourceDraft = {
      name: name.text,
      at: keyword.at,
      settings: emptySettings(),
      defaults: {},
      hosts: [],
    };
    const where = `resource ${name.text}`;
    this.block([keyword, name], (item) => {
      if (item.text === 'on') this.parseOn(resource, item);
      else if (item.text === 'volume') this.unsupportedVolume(item);
      else if (
        !this.tryParseSettingsStatement(resource.settings, item) &&
        !this.tryParseHostStatement(resource.defaults, item)
      ) {
        throw new ConfigError(
          `unknown statement '${item.text}' in ${where} (expected ${alternatives(RESOURCE_STATEMENTS)})`,
          item.at,
        );
      }
    });
    this.draft.resources.push(resource);
  }

  parseOn(resource: ResourceDraft, keyword: Token): void {
    const name = this.value("a host name after 'on'");
    const earlier = resource.hosts.find((h) => h.name === name.text);
    if (earlier) {
      throw new ConfigError(
        `resource ${resource.name}: 'on ${name.text}' appears twice (first at ${formatLocation(earlier.at)})`,
        keyword.at,
      );
    }
    const host: OnSectionDraft = { name: name.text, at: keyword.at };
    this.block([keyword, name], (item) => {
      if (item.text === 'volume') this.unsupportedVolume(item);
      else if (!this.tryParseHostStatement(host, item)) {
        throw new ConfigError(
          `unknown statement '${item.text}' in 'on ${name.text}' (expected ${alternatives(HOST_STATEMENTS)})`,
          item.at,
        );
      }
    });
    resource.hosts.push(host);
  }

  unsupportedVolume(keyword: Token): never {
    throw new ConfigError(
      "'volume' sections are not supported yet: give device, disk and meta-disk directly in the resource or its 'on' sections",
      keyword.at,
    );
  }

  // --- host statements ------------------------------------------------------

  /** device, disk, meta-disk, flexible-meta-disk, address. Returns false for anything else. */
  tryParseHostStatement(host: HostDraft, keyword: Token): boolean {
    switch (keyword.text) {
      case 'device':
        this.parseDevice(host, keyword);
        return true;
      case 'disk': {
        const path = this.value("a block device or file after 'disk'");
        this.endStatement([keyword, path]);
        host.disk = path.text;
        return true;
      }
      case 'meta-disk':
      case 'flexible-meta-disk':
        this.parseMetaDisk(host, keyword);
        return true;
      case 'address':
        this.parseAddressStatement(host, keyword);
        return true;
      default:
        return false;
    }
  }

  /** `device /dev/drbd0;`, `device minor 3;` or `device /dev/drbd0 minor 0;` */
  parseDevice(host: HostDraft, keyword: Token): void {
    const atMinor = (): boolean => this.peek().kind === 'word' && this.peek().text === 'minor';
    const statement = [keyword];
    let path: string | undefined;
    if (!atMinor()) {
      const token = this.value("a device path or 'minor N' after 'device'");
      if (!token.text.startsWith('/')) this.fail("a device path like /dev/drbd0 or 'minor N' after 'device'", token);
      path = token.text;
      statement.push(token);
    }
    let minor: number | undefined;
    if (atMinor()) {
      statement.push(this.next());
      const number = this.expect('word', "a minor number after 'minor'");
      minor = parseInteger(number.text);
      if (minor === undefined) this.fail("a minor number after 'minor'", number);
      statement.push(number);
    }
    this.endStatement(statement);
    host.device = { path, minor };
  }

  /** `meta-disk internal;`, `meta-disk /dev/sdb2[0];` (or `/dev/sdb2 [0]`), `meta-disk /dev/sdb2;` */
  parseMetaDisk(host: HostDraft, keyword: Token): void {
    const target = this.value(`'internal' or a device after '${keyword.text}'`);
    const statement = [keyword, target];
    let text = target.text;
    if (this.peek().kind === 'word' && this.peek().text.startsWith('[')) {
      const index = this.next();
      statement.push(index);
      text += index.text;
    }
    this.endStatement(statement);
    const indexed = /^(.+)\[(\d+)\]$/.exec(text);
    if (text === 'internal') host.metaDisk = { kind: 'internal' };
    else if (indexed) host.metaDisk = { kind: 'indexed', path: indexed[1] as string, index: Number(indexed[2]) };
    else if (text.includes('[') || text.includes(']'))
      this.fail(`'internal', DEVICE or DEVICE[INDEX] after '${keyword.text}'`, target);
    else host.metaDisk = { kind: 'flexible', path: text };
  }

  /** `address 192.168.1.101:7789;`, `address ipv4 1.2.3.4:7789;`, `address ipv6 [fd00::1]:7789;` */
  parseAddressStatement(host: HostDraft, keyword: Token): void {
    const first = this.value("an address like 192.168.1.101:7789 after 'address'");
    const family = isAddressFamily(first.text) ? first : undefined;
    const address = family ? this.value(`an address after 'address ${family.text}'`) : first;
    host.address = parseAddress(family, address);
    this.endStatement(family ? [keyword, family, address] : [keyword, address]);
  }
}
