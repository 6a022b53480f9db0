// What the parser collects before normalization: every file read, `common` and each
// resource kept apart, options already converted to tandem's units but not yet
// merged or defaulted. normalize.ts turns a ConfigDraft into a TandemConfig.
import type { Address, DiskOptions, MetaDisk, NetOptions, Protocol } from '../../api/config.ts';
import type { SourceLocation } from './config-error.ts';

/** The option sections that `common` and `resource` share, plus `protocol`. */
export interface SettingsDraft {
  protocol?: Protocol;
  net: Partial<NetOptions>;
  disk: Partial<DiskOptions>;
  handlers: Record<string, string>;
  startup: Record<string, string>;
  options: Record<string, string>;
}

/** `device /dev/drbd0 minor 0;`: either part may be missing. */
export interface DeviceDraft {
  path?: string;
  minor?: number;
}

/** The statements of an `on HOST {}` section, or those given at resource level for every host. */
export interface HostDraft {
  device?: DeviceDraft;
  disk?: string;
  metaDisk?: MetaDisk;
  address?: Address;
}

export interface OnSectionDraft extends HostDraft {
  name: string;
  at: SourceLocation;
}

export interface ResourceDraft {
  name: string;
  at: SourceLocation;
  settings: SettingsDraft;
  /** Statements at resource level, inherited by every `on` section that does not override them. */
  defaults: HostDraft;
  hosts: OnSectionDraft[];
}

export interface ConfigDraft {
  usageCount?: string;
  globalOptions: Record<string, string>;
  common: SettingsDraft;
  resources: ResourceDraft[];
  /** Options tandem does not implement, one line each, with their location. */
  warnings: string[];
}

export function emptySettings(): SettingsDraft {
  return { net: {}, disk: {}, handlers: {}, startup: {}, options: {} };
}
