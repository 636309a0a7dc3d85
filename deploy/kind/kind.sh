#!/usr/bin/env bash
# Two kind clusters meshed by Skein, the way a user installs it: create them (east.yaml, west.yaml), load
# the images (deploy/images/build.sh), install the Helm chart with values.yaml (its agents route each
# connected cluster's pod CIDRs to that cluster's nodes: they share kind's Docker network), deploy the echo
# service, `skein connect`, and a failover drill.   Usage: deploy/kind/kind.sh up|down
# Needs docker with kind and kubectl; run `bash deploy/scripts/install.sh`
# first (it builds Skein and puts `skein` and helm's build in place).
set -euo pipefail
cd "$(dirname "$0")/../.."
KIND="${KIND:-kind}"
KUBECTL="${KUBECTL:-kubectl}"
HELM="${HELM:-$(bash deploy/scripts/build-tools.sh helm)}"
CLUSTERS=(east:1 west:2) # name:id; subnets from <name>.yaml

field() { sed -n "s/^ *$2: *//p" "deploy/kind/$1.yaml"; }
nodes() { "$KIND" get nodes --name "skein-$1"; }

up() {
  bash deploy/images/build.sh --out dist/images >/dev/null
  for c in "${CLUSTERS[@]}"; do
    local name=${c%%:*} id=${c#*:} ctx="kind-skein-${c%%:*}"
    "$KIND" get clusters | grep -qx "skein-$name" || "$KIND" create cluster --config "deploy/kind/$name.yaml"
    for image in dist/images/*.tar; do "$KIND" load image-archive "$image" --name "skein-$name"; done
    # The agent pins its BPF state in the node's bpffs, so an upgraded agent adopts it.
    for n in $(nodes "$name"); do docker exec "$n" sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf'; done
    "$HELM" upgrade --install skein deploy/helm/skein --kube-context "$ctx" -n skein-system --create-namespace -f deploy/kind/values.yaml \
      --set "cluster.name=$name" --set "cluster.id=$id" --set "cluster.podCidr=$(field "$name" podSubnet)" --set "cluster.serviceCidr=$(field "$name" serviceSubnet)" --wait --timeout 5m
    sed "s/\${CLUSTER_NAME}/$name/g" deploy/manifests/echo.yaml | "$KUBECTL" --context "$ctx" apply -f -
  done
  skein connect --context kind-skein-east --destination-context kind-skein-west
  skein status --context kind-skein-east --wait
  skein drill --context kind-skein-east --service default/echo
}

down() { for c in "${CLUSTERS[@]}"; do "$KIND" delete cluster --name "skein-${c%%:*}"; done; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: deploy/kind/kind.sh up|down" >&2; exit 2 ;;
esac
