// npm run sim:control -- [--seed S] [--seeds K] [--rounds N] [--trace] [--fault NAME] [--keep-going]
//
// Runs K seeded simulations (seeds S, S+1, …) of the controller and the agents
// against a simulated API server, N fault rounds each, and checks the control
// plane's invariants after every step. A failing seed prints its violation, the
// end of its trace and the command that replays it exactly; --trace prints a
// seed's whole trace. Exit 1 when any seed fails.
//
//   npm run sim:control -- --seed 1 --seeds 1000 --rounds 30     the long search
//   npm run sim:control -- --seed 4711 --rounds 12 --trace       replay one seed
import { FAULTS, type Fault, runSeed } from './run.ts';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const first = Number(flag('--seed', '1'));
const seeds = Number(flag('--seeds', '1'));
const rounds = Number(flag('--rounds', '20'));
const trace = process.argv.includes('--trace');
/** Do not stop at the first violation (to see what follows it). */
const keepGoing = process.argv.includes('--keep-going');
const only = flag('--fault', '');
if (only && !(FAULTS as readonly string[]).includes(only)) {
  console.error(`unknown fault ${only}; one of ${FAULTS.join(', ')}`);
  process.exit(2);
}

const t0 = performance.now();
let failed = 0;
let totalRounds = 0;
let simSeconds = 0;
let changes = 0;
for (let seed = first; seed < first + seeds; seed++) {
  const r = await runSeed(seed, rounds, { ...(only ? { faults: [only as Fault] } : {}), keepGoing });
  totalRounds += r.rounds;
  simSeconds += r.simSeconds;
  changes += r.roleChanges;
  if (trace) console.log(r.trace.join('\n'));
  if (r.violations.length > 0) {
    failed++;
    console.log(`\nseed ${seed} FAILED in round ${r.failedRound} (${r.faults.at(-1) ?? 'setup'}):`);
    for (const v of r.violations) console.log(`  ${v}`);
    if (!trace) {
      console.log('  trace (last 60 lines):');
      for (const l of r.trace.slice(-60)) console.log(`    ${l}`);
    }
    console.log(
      `  replay: npm run sim:control -- --seed ${seed} --rounds ${r.failedRound}${only ? ` --fault ${only}` : ''} --trace\n`,
    );
  }
}
const secs = (performance.now() - t0) / 1000;
console.log(
  `sim:control: ${seeds} seed(s) from ${first}, ${totalRounds} rounds, ${simSeconds.toFixed(0)} simulated s, ${changes} role changes, ${failed} failed; ${secs.toFixed(1)} s (${((secs / Math.max(1, totalRounds)) * 1000).toFixed(1)} s per 1000 rounds)`,
);
process.exit(failed > 0 ? 1 : 0);
