#!/usr/bin/env bash
# The README's first command: zmix's main job end to end on the embedded default.
#
# Installs missing packages, builds, generates the demo (a byte-level model, 4 SVF experts and
# a planted few-shot task; docs/demo.md) into a cache folder if it is not there yet, starts
# zmixd on it, submits the task with the CLI and follows it with the live progress bar, then
# prints a report: base-model and single-expert accuracy, adapted accuracy, the α found next to
# the hidden α*, evaluations and time, where the adapted z' and the convergence plot went.
# The daemon it started is stopped on exit; the exit code is non-zero if anything failed.
#
# usage: scripts/demo.sh [--no-build] [--pop N] [--iters N] [--seed S] [--dir DIR] [--out DIR]
#   --no-build   use the binaries already in $ZMIX_BUILD_DIR (default: build/)
#   --pop N, --iters N   the search budget: pop x iters evaluations (default 32 x 25; the
#                default method spends it in generations of its own population)
#   --seed S     demo-init seed (default 1); a cached demo of another seed is regenerated
#   --dir DIR    the demo data (default ${XDG_CACHE_HOME:-$HOME/.cache}/zmix/demo)
#   --out DIR    adapted z', plot and report.json (default ${XDG_CACHE_HOME:-$HOME/.cache}/zmix/demo-out)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${ZMIX_BUILD_DIR:-$root/build}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/zmix
demo=$cache/demo
out=$cache/demo-out
pop=32
iters=25
seed=
do_build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --pop) pop=$2; shift ;;
    --iters) iters=$2; shift ;;
    --seed) seed=$2; shift ;;
    --dir) demo=$2; shift ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
[ -t 2 ] || say() { printf '==> %s\n' "$*" >&2; }

if [ "$do_build" = 1 ]; then
  say "checking packages"
  "$root/scripts/install-deps.sh"
  say "building zmix in $build"
  build_log=$(mktemp "${TMPDIR:-/tmp}/zmix-demo-build.XXXXXX")
  if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release &&
         cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target zmix zmixd; } \
       >"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    echo "demo: the build failed (full log: $build_log)" >&2
    exit 1
  fi
  rm -f "$build_log"
fi
zmix=$build/zmix
zmixd=$build/zmixd
py=/usr/bin/python3 # Debian's, the one install-deps.sh provides
for tool in "$zmix" "$zmixd" "$py"; do
  [ -x "$tool" ] || { echo "demo: $tool is missing (run without --no-build)" >&2; exit 1; }
done

# A demo from another generator version (or of another seed than --seed asks for) is
# regenerated rather than half understood.
current=$("$py" -c 'import json,sys
try:
    m = json.load(open(sys.argv[1]))
    print(m.get("format") == "zmix-demo" and m.get("version") == 1
          and sys.argv[2] in ("", m.get("seed")))
except (OSError, ValueError):
    print(False)' "$demo/demo.json" "$seed")
if [ "$current" != True ]; then
  say "generating the demo model, experts and task into $demo"
  mkdir -p "$(dirname "$demo")"
  "$zmix" demo-init "$demo" --seed "${seed:-1}" --force >/dev/null
else
  say "using the demo in $demo"
fi
mkdir -p "$out"
experts=$("$py" -c 'import json,sys; m=json.load(open(sys.argv[1])); print(",".join(sys.argv[2]+"/"+e for e in m["experts"]))' "$demo/demo.json" "$demo")

# The daemon gets its own state directory (task cache, job store, SVD factors) and socket, so
# it neither meets nor blocks a zmixd the user may be running on ~/.cache/zmix.
state=$(mktemp -d "${TMPDIR:-/tmp}/zmix-demo.XXXXXX")
sock=$state/zmixd.sock
daemon_pid=
cleanup() {
  local rc=$?
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$state/zmixd.log" ]; then
    echo "demo: failed (exit $rc); the daemon's log ends with:" >&2
    tail -n 15 "$state/zmixd.log" >&2
  fi
  rm -rf "$state"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting zmixd on $demo/model"
"$zmixd" --model "$demo/model" --experts "$experts" --cache-dir "$state" \
  --listen "unix:$sock" --log-file "$state/zmixd.log" &
daemon_pid=$!
for _ in $(seq 1 300); do
  "$zmix" info --socket "$sock" >/dev/null 2>&1 && break
  kill -0 "$daemon_pid" 2>/dev/null || { echo "demo: zmixd exited at startup" >&2; exit 1; }
  sleep 0.1
done
"$zmix" info --socket "$sock" >/dev/null

# The task goes as text when the client sends text (the daemon encodes it with the model's
# tokenizer); an older client sends task.tokens.json, the same examples as token ids.
task=$demo/task.json
"$zmix" submit --help 2>/dev/null | grep -q "may be text" || task=$demo/task.tokens.json
n_examples=$("$py" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["examples"]))' "$task")
say "submitting the task ($(basename "$task")): $n_examples few-shot examples, a budget of $((pop * iters)) evaluations (--pop $pop x --iters $iters)"
# --validation 0: the demo holds out its own prompts (heldout.json), so the search uses every
# task example and the report's adapted accuracy is on all of them.
"$zmix" submit demo --examples "$task" --pop "$pop" --iters "$iters" \
  --normalize --validation 0 --recompute --wait --socket "$sock"

"$zmix" get demo --json --out "$out/demo.safetensors" --socket "$sock" >"$state/result.json"
job=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["job"])' "$state/result.json")
"$zmix" status "$job" --json --socket "$sock" >"$state/status.json"
plot_note=
rm -f "$out/convergence.svg"
if ! "$zmix" plot "$job" --out "$out/convergence.svg" --socket "$sock" 2>"$state/plot.err"; then
  plot_note=$(head -n 1 "$state/plot.err")
fi

# The α found, checked on prompts the search never saw (offline, in-process scoring).
alpha=$("$py" -c 'import json,sys; print(",".join("%.9g" % a for a in json.load(open(sys.argv[1]))["alpha"]))' "$state/result.json")
"$zmix" score --model "$demo/model" --examples "$demo/heldout.json" >"$state/held_base.json"
"$zmix" score --model "$demo/model" --experts "$experts" --alpha "$alpha" \
  --examples "$demo/heldout.json" >"$state/held_adapted.json"

kill -TERM "$daemon_pid" && wait "$daemon_pid" || { echo "demo: zmixd did not stop cleanly" >&2; exit 1; }
daemon_pid=

"$py" - "$state" "$demo" "$out" "$plot_note" <<'EOF'
import json, os, sys
state, demo, out, plot_note = sys.argv[1:5]
load = lambda p: json.load(open(p))
res, st = load(f"{state}/result.json"), load(f"{state}/status.json")
secret = load(f"{demo}/secret/alpha_star.json")
task = load(f"{demo}/task.json")["examples"]
hb, ha = load(f"{state}/held_base.json"), load(f"{state}/held_adapted.json")
names = [e["expert"] for e in res["expert_scores"]]
# The scorer keeps each matrix's singular-value mass, so only α's direction matters: both are
# shown normalised to sum 1.
a = res["alpha"]; a = [x / sum(a) for x in a]
star = secret["alpha_star"]
base, adapted = res["base_score"]["accuracy"], res["score"]["accuracy"]
singles = [e["accuracy"] for e in res["expert_scores"]]
ok = adapted > base and all(adapted > s for s in singles)
plot = f"{out}/convergence.svg" if os.path.exists(f"{out}/convergence.svg") else None
n = len(task)
lines = [
    "",
    "zmix demo report",
    f"  task             {n} few-shot examples, e.g. {task[0]['prompt']!r} -> {task[0]['target']!r}",
    f"  base model       accuracy {base:.3f}",
    "  single experts   " + "  ".join(f"{k} {s:.3f}" for k, s in zip(names, singles)),
    f"  adapted          accuracy {adapted:.3f}   (held-out prompts: base {hb['accuracy']:.3f}, adapted {ha['accuracy']:.3f})",
    "  alpha found      " + "  ".join(f"{k} {x:.3f}" for k, x in zip(names, a)),
    "  alpha* (hidden)  " + "  ".join(f"{k} {x:.3f}" for k, x in zip(secret["experts"], star)),
    f"  search           {st['generation']} generations, {st['evaluations']} evaluations, {st['elapsed']:.1f} s ({st['stop_reason']})",
    f"  adapted z'       {out}/demo.safetensors",
    f"  convergence plot {plot if plot else 'not available: ' + plot_note}",
    f"  adapted beats the base model and every single expert: {'yes' if ok else 'NO'}",
]
print("\n".join(lines))
report = {
    "examples": n, "base": base, "experts": dict(zip(names, singles)), "adapted": adapted,
    "heldout": {"base": hb["accuracy"], "adapted": ha["accuracy"]},
    "alpha": dict(zip(names, a)), "alpha_star": dict(zip(secret["experts"], star)),
    "generations": st["generation"], "evaluations": st["evaluations"], "elapsed_s": st["elapsed"],
    "z_path": f"{out}/demo.safetensors", "plot": plot, "ok": ok,
}
with open(f"{out}/report.json", "w") as f:
    json.dump(report, f, indent=1)
sys.exit(0 if ok else 1)
EOF
