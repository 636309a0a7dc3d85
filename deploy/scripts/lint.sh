#!/usr/bin/env bash
# `npm run lint`: the type check of everything incl. tests (tsconfig.lint.json; the build compiles no test),
# ESLint (typed, eslint.config.js), dependency-cruiser (the import rules of each part's README,
# .dependency-cruiser.cjs) and knip (dead files, exports and dependencies, knip.jsonc). Runs all four, then
# exits non-zero naming every one that failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

# The gRPC types the sources import are generated (gitignored); make them as the build does.
npm run -s gen:proto || { echo "lint: generating the gRPC types (npm run gen:proto) failed" >&2; exit 1; }

failed=()
echo "lint: tsc (sources and tests)" >&2
npx tsc -p tsconfig.lint.json || failed+=(tsc)
echo "lint: eslint" >&2
npx eslint . || failed+=(eslint)
echo "lint: dependency-cruiser" >&2
npx depcruise . || failed+=(dependency-cruiser)
echo "lint: knip" >&2
npx knip || failed+=(knip)

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: FAILED: ${failed[*]} (see above)" >&2
  exit 1
fi
echo "lint: passed (tsc, eslint, dependency-cruiser, knip)" >&2
