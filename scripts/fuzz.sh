#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan, build-fz-asan/) and runs each one for
# a fixed time on its corpus (seeds from the real writers + what earlier runs found).
#   scripts/fuzz.sh [-t SECONDS_PER_HARNESS] [-j PARALLEL] [harness ...]
# Ends non-zero if any harness crashed; the crashing input is in
# build-fz-asan/fuzz-artifacts/<harness>/ — minimise it, add it to
# tests/fuzz/regressions/<harness>/, fix the bug. A summary line per harness gives the
# executions, coverage (cov: edges, ft: features) and corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=20
par=1
while getopts "t:j:" o; do
  case $o in
    t) secs=$OPTARG ;;
    j) par=$OPTARG ;;
    *) echo "usage: $0 [-t seconds] [-j parallel] [harness ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
all=(rpc safetensors json_config examples experts task_record job_record cem_checkpoint
     server_config tokenizer)
harnesses=("${@:-${all[@]}}")

b=build-fz-asan
CC=clang cmake -S . -B $b -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZMIX_FUZZ=ON -DZMIX_SANITIZE=ON \
  -DZMIX_BUILD_BENCH=OFF >/dev/null
cmake --build $b -j "$(nproc)" --target fuzz_all >/dev/null
rm -rf $b/fuzz-seeds
$b/tests/fuzz/fuzz_seeds $b/fuzz-seeds proto/vectors.json \
  ../shared/models/stories260K/config.json >/dev/null

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OPENBLAS_NUM_THREADS=1
run_one() {
  local h=$1 corpus=$b/fuzz-corpus/$1 art=$b/fuzz-artifacts/$1/ log=$b/fuzz-logs/$1.log
  mkdir -p "$corpus" "$art" "$(dirname "$log")"
  # The regression inputs are seeds too, so the fuzzer starts from every known hard case.
  local rc=0 dirs=("$corpus" "$b/fuzz-seeds/$h")
  [ -d "tests/fuzz/regressions/$h" ] && dirs+=("tests/fuzz/regressions/$h")
  $b/tests/fuzz/fuzz_$h -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -max_len=16384 -print_final_stats=1 -artifact_prefix="$art" \
    "${dirs[@]}" >"$log" 2>&1 || rc=$?
  local runs cov ft
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
  printf 'fuzz %-15s %ss  execs %-10s cov %-6s ft %-6s corpus %-5s %s\n' "$h" "$secs" "$runs" \
    "$cov" "$ft" "$(ls "$corpus" | wc -l)" "$([ $rc = 0 ] && echo ok || echo "CRASH (see $log)")"
  return $rc
}

fail=0
pids=()
for h in "${harnesses[@]}"; do
  run_one "$h" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$par" ]; then
    wait "${pids[0]}" || fail=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ $fail = 0 ] && echo "fuzz: no crashes" || { echo "fuzz: CRASHES found" >&2; exit 1; }
