#!/usr/bin/env bash
# Builds spiffe-peer (go-spiffe from its Go module, through the Go module proxy) into the cache outside the
# work tree; rebuilt only when its sources change. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
CACHE_ROOT="${SKEIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}"
stamp="$(cat go.mod go.sum main.go | sha256sum | cut -c1-16)"
out="$CACHE_ROOT/spiffe-peer/$stamp/spiffe-peer"
if [ ! -x "$out" ]; then
  mkdir -p "$(dirname "$out")"
  for attempt in 1 2 3; do
    go build -trimpath -o "$out.tmp" . && break
    [ "$attempt" = 3 ] && exit 1
    sleep 5
  done
  mv "$out.tmp" "$out"
fi
echo "$out"
