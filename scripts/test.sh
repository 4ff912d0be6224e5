#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs missing packages, builds with warnings as
# errors, runs ctest, then builds and runs the suite again under AddressSanitizer + UBSan.
#   scripts/test.sh            everything
#   scripts/test.sh --quick    the Release build and its tests only
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

scripts/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

echo "== Release build (-Werror) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DZMIX_WERROR=ON >/dev/null
cmake --build build -j "$jobs"
echo "== Release tests =="
ctest --test-dir build --output-on-failure

if [ $quick = 0 ]; then
  echo "== ASan + UBSan build =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZMIX_SANITIZE=ON \
    -DZMIX_WERROR=ON -DZMIX_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j "$jobs"
  echo "== ASan + UBSan tests =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -LE nosan
fi
echo "zmix: all tests passed"
