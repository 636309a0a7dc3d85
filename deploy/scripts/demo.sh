#!/usr/bin/env bash
# The main job: install everything, bring up two local clusters (east, west) with the global echo service
# on real Kubernetes binaries, mesh them with one `skein connect`, show their state (what each cluster
# exports and what it holds of the other), and end with a failover drill: a client in east calls echo while
# east's echo backends are scaled to zero and back; the report shows the traffic moving to west and back.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/scripts/install.sh # also puts `skein` on PATH
hash -r
STATE_DIR="${SKEIN_STATE_DIR:-$HOME/.local/share/skein/local}"
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
echo
echo "== failover drill (skein drill --context skein-east --service default/echo)"
skein drill --context skein-east --service default/echo
