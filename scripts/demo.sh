#!/usr/bin/env bash
# The main job on the embedded default: builds zmix and runs an adaptation end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)"
./build/zmix --version
./build/zmixd --version
