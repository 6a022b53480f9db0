// `tandemadm top` on a real terminal (tmux) over a real engine pair: it shows the
// initial sync's progress bar, follows a cut link, and `q` gives the terminal back.
// Not on a terminal it prints plain lines without escape codes.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { jest } from '@jest/globals';
import { NODE, Pair, TANDEMADM } from './support/pair.ts';

jest.setTimeout(120_000);

const run = promisify(execFile);

async function tmux(...args: string[]): Promise<string> {
  return (await run('tmux', args)).stdout;
}

/** Polls the pane until `want` matches what it shows; fails with the last screen. */
async function screenShows(session: string, want: RegExp, what: string, timeoutMs = 30_000): Promise<string> {
  const until = Date.now() + timeoutMs;
  let screen = '';
  while (Date.now() < until) {
    screen = await tmux('capture-pane', '-p', '-t', session);
    if (want.test(screen)) return screen;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}; the screen was:\n${screen}`);
}

test('top on a terminal: sync progress, a cut link, q quits', async () => {
  // 64 MiB at 8 MiB/s: the initial sync runs for seconds, long enough to be seen.
  const pair = await Pair.create({ masterMiB: 64, backupMiB: 64, rate: '8M' });
  const session = `tandem-top-${process.pid}`;
  try {
    for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
    for (const n of ['master', 'backup'] as const) await pair.ok(n, 'up', 'mysql');
    await pair.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected');
    await pair.ok('master', '--', '--force', 'primary', 'mysql');

    const cmd = `${NODE} ${TANDEMADM} --run-dir ${pair.runDir('master')} --node master top --interval 0.3; echo "top exited $?"; sleep 60`;
    await tmux('new-session', '-d', '-s', session, '-x', '160', '-y', '30', cmd);

    let screen = await screenShows(session, /sync \[=*>\.*\] +\d+\.\d%/, 'the sync progress bar');
    expect(screen).toMatch(/^tandem top - node master - .* - 1 resource - q quits$/m);
    expect(screen).toMatch(/^mysql +Primary\/Secondary +SyncSource +UpToDate\/Inconsistent /m);

    await pair.waitInSync();
    screen = await screenShows(session, /^mysql +Primary\/Secondary +Connected +UpToDate\/UpToDate /m, 'Connected');
    expect(screen).not.toMatch(/sync \[/);

    await pair.cutLink();
    await pair.waitFor('master', (s) => s.cstate === 'WFConnection', 30_000, 'the lost link to be noticed');
    screen = await screenShows(session, /^mysql +Primary\/Unknown +WFConnection +UpToDate\/DUnknown /m, 'WFConnection');

    await tmux('send-keys', '-t', session, 'q');
    screen = await screenShows(session, /^top exited 0$/m, 'top to quit');
    // The alternate screen is gone: the table is not on the restored terminal.
    expect(screen).not.toMatch(/^RESOURCE/m);
  } finally {
    await tmux('kill-session', '-t', session).catch(() => {});
    await pair.destroy();
  }
});

test('top not on a terminal prints plain lines', async () => {
  const pair = await Pair.create({ masterMiB: 16, backupMiB: 16 });
  try {
    await pair.startBlank();
    await pair.ok('master', 'primary', 'mysql');
    const { stdout } = await run(NODE, [
      TANDEMADM,
      '--run-dir',
      pair.runDir('master'),
      '--node',
      'master',
      'top',
      '--once',
      '--interval',
      '0.2',
    ]);
    expect(stdout).not.toContain('\x1b');
    const lines = stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^tandem top - node master - .* - 1 resource$/);
    expect(lines[2]).toMatch(/^RESOURCE +ROLE +CONN +DISK +OOS +WRITE +READ +REPL +W\/S +LAT AVG +P99$/);
    expect(lines[3]).toMatch(/^mysql +Primary\/Secondary +Connected +UpToDate\/UpToDate +0 B +0 B\/s /);
  } finally {
    await pair.destroy();
  }
});
