// The deterministic simulator's command line (src/sim): rounds of two real
// engines over simulated disks and network under seeded faults, with the
// invariants checked after every event. A failing seed replays exactly:
//   npm run sim -- --seed 1234 --rounds 1 --verbose
// Options:
//   --seed S          first seed (default: from the clock, printed)
//   --rounds N        rounds, seeds S..S+N-1 (default 100)
//   --steps K         actions per round (default 120)
//   --mode M          manual | managed (default: chosen by each seed)
//   --mutant NAME     put an old bug back (src/sim/mutants.ts); repeatable
//   --seconds T       stop starting rounds after T seconds (a time budget)
//   --verbose         print every round's trace
//   --keep-going      do not stop at the first failing round
import { parseArgs } from 'node:util';
import { MUTANTS, type Mutant } from '../src/sim/mutants.ts';
import { runRound, type Mode, type RoundResult } from '../src/sim/run.ts';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    rounds: { type: 'string', default: '100' },
    steps: { type: 'string' },
    mode: { type: 'string' },
    mutant: { type: 'string', multiple: true, default: [] },
    seconds: { type: 'string' },
    verbose: { type: 'boolean', default: false },
    'keep-going': { type: 'boolean', default: false },
  },
});

const first = values.seed !== undefined ? Number(values.seed) : Date.now() % 1_000_000_000;
const rounds = Number(values.rounds);
const mode = values.mode as Mode | undefined;
if (mode !== undefined && mode !== 'manual' && mode !== 'managed')
  throw new Error(`--mode must be manual or managed, not ${mode}`);
const mutants = values.mutant as Mutant[];
for (const m of mutants)
  if (!(MUTANTS as readonly string[]).includes(m)) throw new Error(`unknown mutant ${m} (${MUTANTS.join(', ')})`);
const deadline = values.seconds !== undefined ? Date.now() + Number(values.seconds) * 1000 : Number.POSITIVE_INFINITY;

function report(r: RoundResult): void {
  console.log(`\nFAILED: seed ${r.seed} (${r.mode} mode)`);
  for (const v of r.violations) console.log(`  violated: ${v.invariant}\n    ${v.detail}`);
  console.log('\nWhat happened (the runner):');
  for (const line of r.trace.slice(-120)) console.log(`  ${line}`);
  console.log('\nThe engines, last log lines:');
  for (const line of r.logs) console.log(`  ${line}`);
  const extra = [
    mode ? `--mode ${mode}` : '',
    values.steps ? `--steps ${values.steps}` : '',
    ...mutants.map((m) => `--mutant ${m}`),
  ]
    .filter(Boolean)
    .join(' ');
  console.log(`\nReplay: npm run sim -- --seed ${r.seed} --rounds 1 --verbose${extra ? ` ${extra}` : ''}`);
}

const started = Date.now();
let ran = 0;
let failed = 0;
let events = 0;
let simulatedMs = 0;
let acked = 0;
let faults = 0;
// A round that stops making progress (an await on something the simulation never
// resolves) is a bug too: report its seed instead of hanging the run.
const HANG_MS = 300_000;
for (let i = 0; i < rounds && Date.now() < deadline; i++) {
  const watchdog = setTimeout(() => {
    console.log(`\nHUNG: seed ${first + i} made no progress for ${HANG_MS / 1000} s of wall time`);
    console.log(`Replay: npm run sim -- --seed ${first + i} --rounds 1 --verbose`);
    process.exit(2);
  }, HANG_MS);
  const r = await runRound({
    seed: first + i,
    ...(mode ? { mode } : {}),
    ...(values.steps ? { steps: Number(values.steps) } : {}),
    mutants,
    logLines: Number(process.env.SIM_LOG_LINES ?? 80),
  });
  clearTimeout(watchdog);
  ran++;
  events += r.stats.events;
  simulatedMs += r.stats.simulatedMs;
  acked += r.stats.acked;
  faults += r.stats.faults;
  if (values.verbose) {
    console.log(`--- seed ${r.seed} (${r.mode}): ${JSON.stringify(r.stats)}`);
    for (const line of r.trace) console.log(`  ${line}`);
  }
  if (r.violations.length > 0) {
    failed++;
    report(r);
    if (!values['keep-going']) break;
  }
}
const wall = (Date.now() - started) / 1000;
console.log(
  `\nsim: ${ran} rounds from seed ${first}${mutants.length ? ` with ${mutants.join(', ')}` : ''}: ${failed} failed; ${events} events, ${(simulatedMs / 1000).toFixed(0)} s simulated, ${acked} writes acknowledged, ${faults} faults; ${wall.toFixed(1)} s (${(ran / wall).toFixed(1)} rounds/s)`,
);
process.exit(failed > 0 ? 1 : 0);
