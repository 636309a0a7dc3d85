#!/usr/bin/env bash
# The whole test suite: unit tests, then the e2e tests on the local test bed (real kube-apiserver, etcd,
# network namespaces, BPF). Installs what it needs first. Ends with one line: "N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/install.sh
report="$(mktemp -d)/vitest.json"
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' "$report" || true
exit $status
