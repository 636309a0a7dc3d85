#!/usr/bin/env bash
# Builds the Go tools the images and the Helm chart need, from their Go modules at pinned versions, cached
# by version outside the work tree (like build-kube.sh): crane (go-containerregistry: checks and inspects
# the image archives) and helm (helm.sh/helm/v3: lints, renders and installs deploy/helm/skein).
# Usage: build-tools.sh [crane|helm]...   (default: both); prints each tool's path, one a line.
set -euo pipefail

CRANE_VERSION="${SKEIN_CRANE_VERSION:-v0.22.1}"
HELM_VERSION="${SKEIN_HELM_VERSION:-v3.22.0}"
CACHE_ROOT="${SKEIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}"
export PATH="$PATH:/usr/local/go/bin"

build() { # name version package ldflags
  local name=$1 version=$2 pkg=$3 ldflags=$4
  local out="$CACHE_ROOT/tools/$name-$version"
  if [ ! -x "$out/$name" ]; then
    command -v go >/dev/null || { echo "build-tools: go is not installed (need Go >= 1.26 at /usr/local/go or on PATH)" >&2; exit 1; }
    echo "build-tools: building $name $version from its Go module" >&2
    mkdir -p "$out"
    # A Go build takes both cores for minutes: lowest priority so tests running beside it keep theirs.
    GOBIN="$out" CGO_ENABLED=0 GOFLAGS=-trimpath nice -n 19 go install -ldflags "-s -w $ldflags" "$pkg@$version"
  fi
  echo "$out/$name"
}

tools=("$@"); [ ${#tools[@]} -gt 0 ] || tools=(crane helm)
for t in "${tools[@]}"; do
  case "$t" in
    crane) build crane "$CRANE_VERSION" github.com/google/go-containerregistry/cmd/crane "" ;;
    helm)
      # The Kubernetes version helm assumes without a cluster (template, lint) is its client-go's, as helm's
      # own Makefile sets it; without it, it is 1.20 and the chart's kubeVersion refuses it.
      kube_minor=""
      if [ ! -x "$CACHE_ROOT/tools/helm-$HELM_VERSION/helm" ]; then
        modfile=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
        kube_minor=$(sed -n 's/^\s*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$modfile")
        [ -n "$kube_minor" ] || { echo "build-tools: cannot read helm $HELM_VERSION's client-go version" >&2; exit 1; }
      fi
      kv="-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kube_minor"
      build helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean $kv" ;;
    *) echo "build-tools: unknown tool \"$t\" (crane or helm)" >&2; exit 2 ;;
  esac
done
