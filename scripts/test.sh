#!/usr/bin/env bash
# All of tandem's tests, as CI runs them: typecheck, lint and format check, unit tests of pure code,
# a fixed budget of the control-plane simulation (test/sim/control: seeded, about 25 s) and of
# the engine simulator (test/sim/engine: 500 fixed seeds and the old bugs put back, a few minutes), integration
# tests with real engine processes and real NBD clients, and the e2e suite against a real kube-apiserver/etcd/kube-controller-manager.
# Ends with one plain line: "tests: N passed, M failed".
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=ensure-deps.sh
. scripts/ensure-deps.sh
out=$(mktemp -d)
status=0
export NODE_OPTIONS=--experimental-vm-modules

echo "== typecheck"
tsc -p tsconfig.json --noEmit || status=1
echo "== lint and format (biome; 'npm run format' fixes what it can)"
biome check --error-on-warnings . || status=1

suites=(unit control-sim engine-sim integration)
[[ "${TANDEM_SKIP_E2E:-}" == 1 ]] && echo "== e2e not run: TANDEM_SKIP_E2E=1" || suites+=(e2e)
for suite in "${suites[@]}"; do
  echo "== $suite tests"
  extra=()
  if [[ $suite == e2e ]]; then
    bash scripts/e2e-setup.sh >/dev/null || { echo "e2e setup failed"; status=1; continue; }
  fi
  if [[ $suite == integration ]]; then
    # bench-control.test.ts runs a real etcd and kube-apiserver: the e2e binaries (built once, cached).
    if [[ "${TANDEM_SKIP_E2E:-}" == 1 ]]; then
      echo "== integration: bench-control.test.ts not run (it needs the e2e binaries; TANDEM_SKIP_E2E=1)"
      extra=(--testPathIgnorePatterns bench-control)
    else
      bash scripts/e2e-setup.sh >/dev/null || { echo "e2e setup failed"; status=1; continue; }
    fi
  fi
  jest --selectProjects "$suite" --runInBand --json --outputFile "$out/$suite.json" "${extra[@]}" || status=1
done

node -e '
  const fs = require("node:fs");
  let passed = 0, failed = 0;
  // Also where the run spent its time: the files and tests that take longest (CI has a time limit).
  const files = [], tests = [];
  for (const f of fs.readdirSync(process.argv[1])) {
    const r = JSON.parse(fs.readFileSync(process.argv[1] + "/" + f, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests + r.numRuntimeErrorTestSuites;
    for (const t of r.testResults) {
      const name = t.name.slice(process.argv[2].length + 1);
      files.push([(t.endTime - t.startTime) / 1000, name]);
      for (const a of t.assertionResults) tests.push([(a.duration ?? 0) / 1000, name + " › " + a.title]);
    }
  }
  const top = (rows, n) => rows.sort((a, b) => b[0] - a[0]).slice(0, n).map(([s, n]) => `  ${s.toFixed(1).padStart(7)} s  ${n}`).join("\n");
  console.log("slowest files:\n" + top(files, 10) + "\nslowest tests:\n" + top(tests, 15));
  console.log(`tests: ${passed} passed, ${failed} failed`);
' "$out" "$repo"
rm -rf "$out"
exit $status
