#!/usr/bin/env bash
# Installs everything Skein needs on a Debian machine (run as root): system packages, npm dependencies,
# the TypeScript build, the pinned Kubernetes binaries and Go tools (crane, helm; built from their Go
# modules, cached by version), and the `skein` command on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."

# chromium: headless, for the dashboard's browser e2e test and benchmark (driven by playwright-core; no browser download).
# containerd, runc: run the built images (images e2e; the real-kubelet test bed, with the CNI plugins).
APT_PACKAGES=(etcd-server etcd-client iproute2 iptables clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make g++ python3 git chromium containerd runc containernetworking-plugins)

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (it installs packages; skein local needs root for netns, cgroups and BPF)" >&2; exit 1; }
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v node >/dev/null || { echo "install.sh: Node.js 20 or newer is required (node not found)" >&2; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || { echo "install.sh: Node.js 20 or newer is required (have $(node --version))" >&2; exit 1; }
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "install.sh: Go is required to build the pinned Kubernetes binaries (install Go >= 1.26 to /usr/local/go)" >&2; exit 1; }

# npm ci always reinstalls; skip it when node_modules was installed from this exact lockfile. The registry
# can be slow or drop connections, so prefer the local cache and retry.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.skein-lock-sum 2>/dev/null)" != "$lock_sum" ]; then
  for attempt in 1 2 3 4; do
    echo "install: npm ci (attempt $attempt)" >&2
    if npm ci --no-audit --no-fund --loglevel=error --prefer-offline --fetch-retries=5 --fetch-retry-mintimeout=2000 --fetch-timeout=120000; then
      echo "$lock_sum" > node_modules/.skein-lock-sum
      break
    fi
    [ "$attempt" = 4 ] && { echo "install.sh: npm ci failed 4 times (registry unreachable?)" >&2; exit 1; }
    sleep $((attempt * 15))
  done
fi
echo "install: build" >&2
npm run --silent build
echo "install: Kubernetes binaries" >&2
bash deploy/scripts/build-kube.sh >/dev/null
# The e2e tests' SPIFFE workload (go-spiffe), cached like Kubernetes.
bash e2e/spiffe-peer/build.sh >/dev/null
# crane (checks the image archives) and helm (the chart's tests), cached like Kubernetes.
bash deploy/scripts/build-tools.sh >/dev/null
# `skein` on PATH, running this checkout's build (rewritten only when it points elsewhere).
wrapper="#!/bin/sh
exec '$(command -v node)' '$PWD/dist/deploy/cli/skein.js' \"\$@\""
if [ "$(cat /usr/local/bin/skein 2>/dev/null)" != "$wrapper" ]; then
  printf '%s\n' "$wrapper" > /usr/local/bin/skein.tmp && chmod 755 /usr/local/bin/skein.tmp && mv /usr/local/bin/skein.tmp /usr/local/bin/skein
  echo "install: skein -> $PWD/dist/deploy/cli/skein.js ($(/usr/local/bin/skein version | head -1))" >&2
fi
