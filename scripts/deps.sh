#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12: apt packages and Rust
# components. Idempotent: when everything is present it changes nothing and takes a second.
set -euo pipefail

APT_PACKAGES=(
  apache2 apache2-dev          # the httpd we load into, apxs and headers
  libpcap-dev                  # the sensor's capture library
  clang libclang-dev           # bindgen
  tshark tcpdump               # independent JA3 oracle; tcpdump records what a live test saw
  curl openssl nghttp2-client  # real TLS clients (curl, openssl s_client, h2load)
  python3                      # the JA4 corpus checker
  jq                           # the demo pretty-prints the log
  iproute2 procps psmisc       # ip, ps, fuser used by fixtures
  clickhouse-server clickhouse-client  # the shipper's tests start a private server
  python3-venv                 # .venv: chdb (seed DDL on a modern engine), ziglang (glibc 2.28 builds)
  rpm patchelf logrotate       # `make rpm`, `make deb` (libpcap soname), the logrotate test
  binutils                     # readelf: GLIBC_ symbol versions of the packaged binaries
  valgrind                     # `make bench`: instructions and simulated cache misses per request (cachegrind, callgrind)
  systemd                      # systemd-analyze verify/security of the units
  # Real clients of the detector's ja4->client map (scripts/build_client_map.py) and of its
  # end-to-end tests: headless browsers, TLS tool clients, Go's net/http.
  chromium firefox-esr gnutls-bin wget golang-go
  time                         # /usr/bin/time: peak RSS of a process (scripts/bench/query.py)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; the answer does not matter to us.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts the system apache2 on :80 after install; our tests run private instances
  # on free loopback ports and need nothing from it.
  if command -v systemctl >/dev/null && systemctl is-active --quiet apache2 2>/dev/null; then
    $SUDO systemctl stop apache2 || true
  fi
else
  echo "deps: apt packages present"
fi

if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
      rustup component add "$c"
    fi
  done
fi

# Python tools kept out of the system interpreter, in the project's .venv (gitignored):
# chdb runs the seed's own ClickHouse DDL in-process; ziglang is the linker cargo-zigbuild uses
# to build against el8's glibc 2.28; requests and httpx are clients of the client map.
# chdb is installed without pandas and pyarrow (about 300 MB our tests never import: they read
# TabSeparated text). pip keeps no cache and unpacks on the project's own disk, not in /tmp (a
# small tmpfs on some machines); when the disk is full anyway, the error says how full.
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv"
PY_PACKAGES=("chdb --no-deps" "chdb-core --no-deps" ziglang requests httpx)
if [[ ! -x "$VENV/bin/python3" ]]; then
  python3 -m venv "$VENV"
fi
for spec in "${PY_PACKAGES[@]}"; do
  read -r p flags <<<"$spec"
  if ! "$VENV/bin/python3" -m pip show -q "$p" >/dev/null 2>&1; then
    echo "deps: pip install $p"
    mkdir -p "$VENV/pip-tmp"
    # shellcheck disable=SC2086 # flags is a word list on purpose
    if ! TMPDIR="$VENV/pip-tmp" "$VENV/bin/python3" -m pip install -q --no-cache-dir \
        --disable-pip-version-check $flags "$p"; then
      echo "deps: pip install $p failed; free space where it installs:" >&2
      df -h "$VENV" /tmp >&2 || true
      rm -rf "$VENV/pip-tmp"
      exit 1
    fi
    rm -rf "$VENV/pip-tmp"
  fi
done

# Packaging tools: cargo-zigbuild (el8 glibc baseline) and cargo-deb.
for tool in cargo-zigbuild cargo-deb; do
  if ! command -v "$tool" >/dev/null && [[ ! -x "$HOME/.cargo/bin/$tool" ]]; then
    echo "deps: cargo install $tool"
    cargo install --locked -q "$tool"
  fi
done
