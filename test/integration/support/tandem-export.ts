// A running tandem export to point NBD clients at: a real engine process started by
// tandemadm (test/integration/support/pair.ts), either alone (StandAlone Primary) or as a
// Connected protocol C pair whose blank disks skip the initial sync.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Pair, tool } from './pair.ts';

export interface TandemExportOptions {
  /** Backing size per node in MiB (both nodes). */
  readonly mib: number;
  /** A Connected pair (master Primary, backup Secondary) instead of master alone. */
  readonly connected?: boolean;
}

/** Starts master (and backup) and promotes master; returns the pair, master's export ready. */
export async function startTandemExport(o: TandemExportOptions): Promise<Pair> {
  const pair = await Pair.create({ protocol: 'C', masterMiB: o.mib, backupMiB: o.mib });
  await pair.ok('master', 'create-md', 'mysql');
  await pair.ok('backup', 'create-md', 'mysql');
  await pair.ok('master', 'up', 'mysql');
  if (o.connected) {
    await pair.ok('backup', 'up', 'mysql');
    await pair.waitFor('master', (s) => s.cstate === 'Connected', 30_000, 'Connected');
    // Both disks are fresh zero-filled files: DRBD's documented shortcut skips the full sync.
    await pair.ok('master', '--', '--clear-bitmap', 'new-current-uuid', 'mysql');
    await pair.waitInSync();
    await pair.ok('master', 'primary', 'mysql');
  } else {
    await pair.ok('master', 'disconnect', 'mysql');
    await pair.ok('master', '--', '--force', 'primary', 'mysql');
  }
  return pair;
}

/** sha256 of the whole device as an NBD client reads it (nbdcopy into `scratch`). */
export async function deviceSha256(uri: string, scratch: string): Promise<string> {
  await tool('nbdcopy', [uri, scratch], 120_000);
  return createHash('sha256')
    .update(await readFile(scratch))
    .digest('hex');
}
