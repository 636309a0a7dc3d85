#!/usr/bin/env bash
# The main job: install everything, bring up two local clusters (east, west) with the global echo service
# on real Kubernetes binaries, mesh them with one `skein connect`, and show their state: what each cluster
# exports and what it holds of the other.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/install.sh
STATE_DIR="${SKEIN_STATE_DIR:-$HOME/.local/share/skein/local}"
skein() { node dist/deploy/cli/skein.js "$@"; }
skein local down --state-dir "$STATE_DIR" >/dev/null
skein local up --state-dir "$STATE_DIR" --clusters east:1,west:2 --nodes 2
export KUBECONFIG="$STATE_DIR/kubeconfig"
echo
skein connect --context skein-east --destination-context skein-west
for ctx in skein-east skein-west; do
  echo
  echo "== $ctx"
  "$STATE_DIR/bin/kubectl" --context "$ctx" get nodes,pods -o wide -A
  echo
  skein status --context "$ctx" --wait
done
