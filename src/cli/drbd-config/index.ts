// tandemadm's reader for DRBD-syntax configuration (drbd.conf(5), DRBD 8.4).
export { ConfigError, type SourceLocation } from './config-error.ts';
export { findResource, selectHosts } from './hosts.ts';
export type { FileAccess } from './include.ts';
export { loadConfigFile, parseConfigText, type ParseOptions, type ParseResult } from './load.ts';
