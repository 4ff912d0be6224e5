#!/usr/bin/env bash
# Installs the Debian 12 packages zmix needs to build, test and run, skipping those already
# present. Safe to run again; does nothing when everything is installed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libopenblas-dev liblapacke-dev libuv1-dev libmsgpack-dev libcjson-dev libcmocka-dev
  python3 python3-msgpack python3-pytest python3-numpy
  # the Python client as a package (clients/python), installed offline into a venv by the
  # tests: pip, venv, and setuptools + wheel as its build backend
  python3-pip python3-venv python3-setuptools python3-wheel
  # zmixd --http (the metrics and the dashboard), and the browser its dashboard test drives
  libmicrohttpd-dev chromium
  # zmixd --store redis://... (a fleet of daemons, docs/fleet.md): the client library, and
  # the server its tests start on a loopback port
  libhiredis-dev redis-server
  # the reference external evaluator (examples/python/evaluator.py) and its mixed-fleet test
  python3-torch
  # the service test (tests/install/test_systemd_service.py) boots Debian's systemd in its
  # own namespaces and installs, enables and starts zmixd.service in it as docs/install.md
  # says; useradd and runuser, unshare and nsenter come from passwd and util-linux
  systemd passwd util-linux
)
# node + npm: the tokenizer parity test's reference implementations (test only, see below).
# A node that is already on the machine (not Debian's) is used as it is.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
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
if [ ${#missing[@]} -gt 0 ]; then
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
fi

# The reference tokenizers the parity test compares zmix with (transformers.js and the
# tokenizers library's Node binding), pinned by tests/model/tokenizers/node/package-lock.json
# and installed beside it. Never a run-time dependency; when the npm registry cannot be
# reached the parity test skips and says so.
ref="$(cd "$(dirname "$0")/.." && pwd)/tests/model/tokenizers/node"
if [ ! -d "$ref/node_modules/@huggingface/transformers" ] || [ ! -d "$ref/node_modules/tokenizers" ]; then
  echo "zmix: installing the reference tokenizers for the parity test (npm ci in $ref)" >&2
  (cd "$ref" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    echo "zmix: npm ci failed; the tokenizer parity test will be skipped" >&2
fi
