#!/usr/bin/env bash
# Installs the Debian 12 packages zmix needs to build, test and run, skipping those already
# present. Safe to run again; does nothing when everything is installed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libopenblas-dev liblapacke-dev libuv1-dev libmsgpack-dev libcjson-dev libcmocka-dev
  python3 python3-msgpack python3-pytest python3-numpy
)
# clang + its runtimes: the libFuzzer harnesses (scripts/fuzz.sh), run by scripts/test.sh.
if [ "${ZMIX_WITH_FUZZ:-1}" = 1 ]; then
  packages+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "zmix: installing missing Debian packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo=sudo; else
    echo "zmix: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
