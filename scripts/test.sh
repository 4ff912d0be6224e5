#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs missing packages, builds with warnings as
# errors, runs ctest, then builds and runs the suite again under AddressSanitizer + UBSan,
# then short libFuzzer runs of every harness and the threaded parts under ThreadSanitizer.
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
# As many at once as there are cores: every test has its own ports, sockets and directories.
ctest --test-dir build --output-on-failure -j "$jobs"
# The Python client's results must not change type with the environment: its package tests
# run with and without NumPy (python_client, python_client_without_numpy, above); the tests
# that drive the daemon through it run again with NumPy hidden.
echo "== Python end-to-end tests without NumPy =="
PYTHONPATH="$PWD/clients/python/tests/numpy_hidden" \
  ctest --test-dir build --output-on-failure -R '^(e2e_daemon|client_e2e|stress_faults)$'

if [ $quick = 0 ]; then
  echo "== ASan + UBSan build =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZMIX_SANITIZE=ON \
    -DZMIX_WERROR=ON -DZMIX_BUILD_BENCH=OFF >/dev/null
  cmake --build build-asan -j "$jobs"
  echo "== ASan + UBSan tests =="
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -LE nosan -j "$jobs"

  echo "== Fuzz: every libFuzzer harness, 20 s each (docs/reliability.md) =="
  scripts/fuzz.sh -t 20 -j "$jobs"

  # The worker pool, the job registry (through zmixd under load, cancels and kill -9), the
  # persistence layer's threads and the HTTP listener's (--http: its thread and the loop). Not the whole suite: the model tests only repeat the
  # single-threaded scoring paths ten times slower (docs/reliability.md).
  echo "== ThreadSanitizer build =="
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZMIX_TSAN=ON -DZMIX_WERROR=ON \
    -DZMIX_BUILD_BENCH=OFF >/dev/null
  cmake --build build-tsan -j "$jobs"
  echo "== ThreadSanitizer tests =="
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" OPENBLAS_NUM_THREADS=1 \
    ZMIX_CRASH_ITERS=6 ZMIX_LOAD_CONNECTIONS=100 ZMIX_LOAD_REQUESTS=2000 \
    ctest --test-dir build-tsan --output-on-failure \
    -R '^(test_pool|test_task_cache|test_job_store|test_fleet_jobs|test_rpc|stress_limits|stress_load|stress_crash_loop|e2e_http_metrics|e2e_http_dashboard)$'
fi
echo "zmix: all tests passed"
