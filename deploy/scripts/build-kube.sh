#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet and kube-proxy from the official
# k8s.io/kubernetes Go module at a pinned release, cached by version outside the work tree.
# `go install pkg@version` refuses the module's replace directives, so a wrapper module pins
# every staging module (read from the release's own go.mod) to its matching v0.N.P tag.
set -euo pipefail

KUBE_VERSION="${SKEIN_KUBE_VERSION:-v1.36.3}"
CACHE_ROOT="${SKEIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}"
OUT="$CACHE_ROOT/kube/$KUBE_VERSION/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

have_all() { for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done; }
if have_all; then echo "$OUT"; exit 0; fi

command -v go >/dev/null || { echo "build-kube: go is not installed (need Go >= the release's go directive)" >&2; exit 1; }
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
patch="${KUBE_VERSION##*.}"
staging_version="v0.${minor}.${patch}"

work="$CACHE_ROOT/kube/$KUBE_VERSION/module"
mkdir -p "$work" "$OUT"
cd "$work"
export GOFLAGS="-mod=mod" CGO_ENABLED=0
if [ ! -f go.mod ]; then
  go mod init skein.local/kubebuild >/dev/null 2>&1
fi
modfile=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
[ -f "$modfile" ] || { echo "build-kube: cannot download k8s.io/kubernetes@$KUBE_VERSION" >&2; exit 1; }
go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
for m in $(grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$modfile" | awk '{print $1}'); do
  go mod edit -replace="$m=$m@$staging_version"
done
# A blank-import file makes `go mod tidy` resolve every dependency of the commands.
cat > tools.go <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
go mod tidy -e >/dev/null
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
for b in "${BINARIES[@]}"; do
  [ -x "$OUT/$b" ] && continue
  echo "build-kube: building $b $KUBE_VERSION" >&2
  go build -trimpath -ldflags "$ldflags" -o "$OUT/$b.tmp" "k8s.io/kubernetes/cmd/$b"
  mv "$OUT/$b.tmp" "$OUT/$b"
done
echo "$OUT"
