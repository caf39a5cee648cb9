#!/usr/bin/env bash
# Measures how reliably the simulator's CI suites catch each planted bug.
#
#   yggr-sim/planted/measure.sh [RUNS] [PATCH...]
#
# For each patch (default: every *.patch here and in runtime/): apply it in a scratch worktree
# of HEAD, build the runner in release, run the CI budget RUNS times (default 10) with base
# seeds 1..RUNS, two at a time, and drop the patch again. An engine patch (yggr-core) runs
# the engine's suites (`--example suite`, budget 1); a runtime patch (yggr) runs the
# whole-stack suite (`--example stack`, 200 runs: the CI budget). A run catches the bug when the runner fails
# (an invariant or check, the liveness phase, a coverage gate, or an assertion).
# Prints one line per patch:
#
#   NN-name  caught C/RUNS  median S s  slowest S s   (seconds until the failing suite stopped)
#
# The worktree keeps the checkout you work in untouched; it shares the target directory's
# dependencies through CARGO_TARGET_DIR (default: target/planted).
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)

runs=${1:-10}
shift || true
patches=()
for patch in "$@"; do
  patches+=("$(realpath "$patch")")
done
if [ ${#patches[@]} -eq 0 ]; then
  patches=("$top"/yggr-sim/planted/*.patch "$top"/yggr-sim/planted/runtime/*.patch)
fi

work=$(mktemp -d)
tree="$work/tree"
git worktree add --detach -q "$tree" HEAD
trap 'git worktree remove --force "$tree"; rm -rf "$work"' EXIT
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target/planted}

for patch in "${patches[@]}"; do
  name=$(basename "$patch" .patch)
  git -C "$tree" checkout -q -- yggr-core yggr
  git -C "$tree" apply "$patch"
  # The engine's suites at their default budget, as measured since they were planted; the
  # stack suite at the CI budget (200 runs).
  runner=suite
  budget=1
  if grep -q '^diff --git a/yggr/' "$patch"; then
    runner=stack
    budget=4
  fi
  if ! (cd "$tree" && cargo build --release -q -p yggr-sim --example "$runner") 2>"$work/build.log"; then
    echo "$name  does not build"
    cat "$work/build.log"
    continue
  fi
  cp "$CARGO_TARGET_DIR/release/examples/$runner" "$work/suite"
  for ((seed = 1; seed <= runs; seed += 2)); do
    pids=()
    for offset in 0 1; do
      base=$((seed + offset))
      [ "$base" -le "$runs" ] || continue
      (
        start=$(date +%s.%N)
        if YGGR_SIM_BUDGET=$budget YGGR_SIM_SEED_BASE=$base "$work/suite" >"$work/run-$base.log" 2>&1; then
          echo "missed" >"$work/result-$base"
        else
          echo "caught $(echo "$(date +%s.%N) - $start" | bc)" >"$work/result-$base"
        fi
      ) &
      pids+=($!)
    done
    wait "${pids[@]}"
  done
  caught=0
  times=()
  for ((base = 1; base <= runs; base++)); do
    read -r verdict seconds <"$work/result-$base" || true
    if [ "$verdict" = caught ]; then
      caught=$((caught + 1))
      times+=("$seconds")
    fi
  done
  if [ ${#times[@]} -gt 0 ]; then
    sorted=$(printf '%s\n' "${times[@]}" | sort -n)
    median=$(echo "$sorted" | sed -n "$(((${#times[@]} + 1) / 2))p")
    slowest=$(echo "$sorted" | tail -1)
    printf '%-50s caught %2d/%d  median %6.1f s  slowest %6.1f s\n' \
      "$name" "$caught" "$runs" "$median" "$slowest"
  else
    printf '%-50s caught %2d/%d\n' "$name" "$caught" "$runs"
  fi
  first_failure=$(grep -h -m1 "FAILED\|panicked\|simulation failed" "$work"/run-*.log 2>/dev/null | head -1 || true)
  if [ -n "$first_failure" ]; then
    echo "    e.g. ${first_failure:0:240}"
  fi
  rm -f "$work"/result-* "$work"/run-*.log
done
