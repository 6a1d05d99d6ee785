#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12: apt packages and Rust
# components. Idempotent: when everything is present it changes nothing and takes a second.
set -euo pipefail

APT_PACKAGES=(
  apache2 apache2-dev          # the httpd we load into, apxs and headers
  libpcap-dev                  # the sensor's capture library
  clang libclang-dev           # bindgen
  tshark                       # independent JA3 oracle in the end-to-end tests
  curl openssl nghttp2-client  # real TLS clients (curl, openssl s_client, h2load)
  python3                      # the JA4 corpus checker
  jq                           # the demo pretty-prints the log
  iproute2 procps psmisc       # ip, ps, fuser used by fixtures
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
