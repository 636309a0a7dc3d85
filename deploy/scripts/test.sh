#!/usr/bin/env bash
# The whole test suite: the lint gate (npm run lint: tsc of sources and tests, eslint, dependency-cruiser, knip), unit tests, then the
# e2e tests on the local test bed (real kube-apiserver, etcd, network namespaces, BPF). Installs what it
# needs first. Ends with one line: "N passed, N failed, N skipped". A lint failure does not stop the tests,
# but the script then exits non-zero and says so just before that line.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/install.sh
lint_status=0
npm run -s lint || lint_status=$?
report="$(mktemp -d)/vitest.json"
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
if [ "$lint_status" != 0 ]; then
  echo "test.sh: LINT FAILED (npm run lint exited $lint_status; its output is above the tests')" >&2
  if [ "$status" = 0 ]; then status=$lint_status; fi
fi
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' "$report" || true
exit $status
