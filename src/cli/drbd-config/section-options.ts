// The options tandem understands in `net {}`, `disk {}` and `syncer {}`, and where
// each one lands in the typed config (src/api/config.ts), converted to its units.
// `syncer {}` is DRBD 8.3's section: 8.4 moved its options to `disk` and `net`,
// and so do we. Options that DRBD has but tandem does not implement are ignored
// with a warning; `handlers`, `startup` and `options` keep every entry as text.
import {
  AFTER_SB_0PRI,
  AFTER_SB_1PRI,
  AFTER_SB_2PRI,
  FENCING,
  ON_IO_ERROR,
  PROTOCOLS,
  type Protocol,
} from '../../api/config.ts';
import { ConfigError, formatLocation } from './config-error.ts';
import type { SettingsDraft } from './draft.ts';
import type { OptionValue } from './option-value.ts';
import { describeToken, type Token } from './tokenizer.ts';
import { UNIT } from './units.ts';

export const SECTION_NAMES = ['net', 'disk', 'syncer', 'handlers', 'startup', 'options'] as const;
export type SectionName = (typeof SECTION_NAMES)[number];

export function isSectionName(word: string): word is SectionName {
  return (SECTION_NAMES as readonly string[]).includes(word);
}

export function parseProtocol(token: Token): Protocol {
  if ((PROTOCOLS as readonly string[]).includes(token.text)) return token.text as Protocol;
  throw new ConfigError(`protocol must be A, B or C but found ${describeToken(token)}`, token.at);
}

type Apply = (settings: SettingsDraft, option: OptionValue) => void;

const protocol: Apply = (s, o) => {
  s.protocol = parseProtocol(o.required());
};
const verifyAlg: Apply = (s, o) => {
  s.net.verifyAlg = o.text();
};
const csumsAlg: Apply = (s, o) => {
  s.net.csumsAlg = o.text();
};
// drbd_limits.h: resync-rate, c-max-rate and c-min-rate default to KiB/s; c-fill-target
// and size to sectors; c-plan-ahead is in tenths of a second and stays so.
const resyncRate: Apply = (s, o) => {
  s.disk.resyncRate = o.scaled(UNIT.kib);
};
const alExtents: Apply = (s, o) => {
  s.disk.alExtents = o.integer();
};
const cPlanAhead: Apply = (s, o) => {
  s.disk.cPlanAhead = o.integer();
};
const cMaxRate: Apply = (s, o) => {
  s.disk.cMaxRate = o.scaled(UNIT.kib);
};
const cMinRate: Apply = (s, o) => {
  s.disk.cMinRate = o.scaled(UNIT.kib);
};
const cFillTarget: Apply = (s, o) => {
  s.disk.cFillTarget = o.scaled(UNIT.sector);
};

const NET: Record<string, Apply> = {
  protocol,
  'allow-two-primaries': (s, o) => {
    s.net.allowTwoPrimaries = o.flag();
  },
  'cram-hmac-alg': (s, o) => {
    s.net.cramHmacAlg = o.text();
  },
  'shared-secret': (s, o) => {
    s.net.sharedSecret = o.text();
  },
  // tandem: TLS 1.3 with mutual authentication for the peer link (docs/design/2026-12-06-peer-wire.md).
  tls: (s, o) => {
    s.net.tls = o.flag();
  },
  'tls-ca': (s, o) => {
    s.net.tlsCa = o.text();
  },
  'tls-cert': (s, o) => {
    s.net.tlsCert = o.text();
  },
  'tls-key': (s, o) => {
    s.net.tlsKey = o.text();
  },
  'after-sb-0pri': (s, o) => {
    s.net.afterSb0pri = o.oneOf(AFTER_SB_0PRI, /^discard-node-.+$/);
  },
  'after-sb-1pri': (s, o) => {
    s.net.afterSb1pri = o.oneOf(AFTER_SB_1PRI);
  },
  'after-sb-2pri': (s, o) => {
    s.net.afterSb2pri = o.oneOf(AFTER_SB_2PRI);
  },
  fencing: (s, o) => {
    s.disk.fencing = o.oneOf(FENCING);
  },
  'verify-alg': verifyAlg,
  'csums-alg': csumsAlg,
  // drbd.conf(5): timeout and ping-timeout are in tenths of a second, connect-int and ping-int in seconds.
  timeout: (s, o) => {
    s.net.timeoutMs = o.integer() * 100;
  },
  'ping-timeout': (s, o) => {
    s.net.pingTimeoutMs = o.integer() * 100;
  },
  'connect-int': (s, o) => {
    s.net.connectIntMs = o.integer() * 1000;
  },
  'ping-int': (s, o) => {
    s.net.pingIntMs = o.integer() * 1000;
  },
  'max-buffers': (s, o) => {
    s.net.maxBuffers = o.integer();
  },
  'max-epoch-size': (s, o) => {
    s.net.maxEpochSize = o.integer();
  },
  // tandem only: bytes (k/M/G suffixes), and milliseconds.
  'max-epoch-bytes': (s, o) => {
    s.net.maxEpochBytes = o.scaled(UNIT.byte);
  },
  'max-epoch-age': (s, o) => {
    s.net.maxEpochAgeMs = o.integer();
  },
};

const DISK: Record<string, Apply> = {
  'on-io-error': (s, o) => {
    s.disk.onIoError = o.oneOf(ON_IO_ERROR);
  },
  'resync-rate': resyncRate,
  'al-extents': alExtents,
  size: (s, o) => {
    s.disk.size = o.scaled(UNIT.sector);
  },
  'c-plan-ahead': cPlanAhead,
  'c-max-rate': cMaxRate,
  'c-min-rate': cMinRate,
  'c-fill-target': cFillTarget,
  'discarded-data-dir': (s, o) => {
    s.disk.discardedDataDir = o.text();
  },
  fencing: (s, o) => {
    s.disk.fencing = o.oneOf(FENCING);
  },
};

const SYNCER: Record<string, Apply> = {
  rate: resyncRate,
  'verify-alg': verifyAlg,
  'csums-alg': csumsAlg,
  'al-extents': alExtents,
  'c-plan-ahead': cPlanAhead,
  'c-max-rate': cMaxRate,
  'c-min-rate': cMinRate,
  'c-fill-target': cFillTarget,
};

const TABLES = { net: NET, disk: DISK, syncer: SYNCER } as const;

/** Applies one option of `section`; returns a warning when tandem ignores it. */
export function applySectionOption(
  section: SectionName,
  settings: SettingsDraft,
  option: OptionValue,
): string | undefined {
  const name = option.name.text;
  if (section === 'handlers' || section === 'startup' || section === 'options') {
    settings[section][name] = option.textOrYes();
    return undefined;
  }
  const apply = Object.hasOwn(TABLES[section], name) ? TABLES[section][name] : undefined;
  if (apply === undefined) {
    return `${formatLocation(option.name.at)}: ignoring ${section} option '${name}': not implemented by tandem`;
  }
  apply(settings, option);
  return undefined;
}
