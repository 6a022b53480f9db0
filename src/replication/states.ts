// DRBD's state vocabulary, spelled as DRBD spells it so that a DRBD user reads
// tandem's status without a dictionary (DESIGN.md §2, drbd.conf(5), /proc/drbd).

export const ROLES = ['Primary', 'Secondary', 'Unknown'] as const;
export type Role = (typeof ROLES)[number];

export const CONNECTION_STATES = [
  'StandAlone',
  'Disconnecting',
  'Unconnected',
  'Timeout',
  'BrokenPipe',
  'NetworkFailure',
  'ProtocolError',
  'TearDown',
  'WFConnection',
  'WFReportParams',
  'Connected',
  'StartingSyncS',
  'StartingSyncT',
  'WFBitMapS',
  'WFBitMapT',
  'WFSyncUUID',
  'SyncSource',
  'SyncTarget',
  'PausedSyncS',
  'PausedSyncT',
  'VerifyS',
  'VerifyT',
  'Ahead',
  'Behind',
] as const;
export type ConnectionState = (typeof CONNECTION_STATES)[number];

export const DISK_STATES = [
  'Diskless',
  'Attaching',
  'Failed',
  'Negotiating',
  'Inconsistent',
  'Outdated',
  'DUnknown',
  'Consistent',
  'UpToDate',
] as const;
export type DiskState = (typeof DISK_STATES)[number];

/** The link is up and both sides exchange replication traffic. */
export function isConnected(c: ConnectionState): boolean {
  return (
    c === 'Connected' ||
    isSyncing(c) ||
    c === 'WFBitMapS' ||
    c === 'WFBitMapT' ||
    c === 'WFSyncUUID' ||
    c === 'StartingSyncS' ||
    c === 'StartingSyncT' ||
    c === 'VerifyS' ||
    c === 'VerifyT' ||
    c === 'Ahead' ||
    c === 'Behind'
  );
}

export function isSyncing(c: ConnectionState): boolean {
  return c === 'SyncSource' || c === 'SyncTarget' || c === 'PausedSyncS' || c === 'PausedSyncT';
}

export function isSyncSource(c: ConnectionState): boolean {
  return c === 'SyncSource' || c === 'PausedSyncS';
}

export function isSyncTarget(c: ConnectionState): boolean {
  return c === 'SyncTarget' || c === 'PausedSyncT';
}

/** A disk whose data may be served to an application. */
export function isUpToDate(d: DiskState): boolean {
  return d === 'UpToDate';
}

/** A disk that holds a block device we can write to (even if its data is behind). */
export function hasLocalDisk(d: DiskState): boolean {
  return d === 'Inconsistent' || d === 'Outdated' || d === 'Consistent' || d === 'UpToDate' || d === 'Negotiating';
}
