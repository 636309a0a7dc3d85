#!/usr/bin/env bash
# The main job: install everything, bring up two local clusters (east, west) with the global echo service
# on real Kubernetes binaries, show their state and what each cluster's skein-apiserver exports.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/install.sh
STATE_DIR="${SKEIN_STATE_DIR:-$HOME/.local/share/skein/local}"
skein() { node dist/deploy/cli/skein.js "$@"; }
skein local down --state-dir "$STATE_DIR" >/dev/null
skein local up --state-dir "$STATE_DIR" --clusters east:1,west:2 --nodes 2
for ctx in skein-east skein-west; do
  echo
  echo "== $ctx"
  "$STATE_DIR/bin/kubectl" --kubeconfig "$STATE_DIR/kubeconfig" --context "$ctx" get nodes,pods,endpointslices -o wide -A
  echo
  skein status --kubeconfig "$STATE_DIR/kubeconfig" --context "$ctx"
done
