#!/usr/bin/env bash
# Measures how reliably the simulator's CI suites catch each planted engine bug.
#
#   yggr-sim/planted/measure.sh [RUNS] [PATCH...]
#
# For each patch (default: every *.patch here): apply it to yggr-core in a scratch worktree
# of HEAD, build the suite runner in release, run the CI budget RUNS times (default 10) with
# base seeds 1..RUNS, two at a time, and drop the patch again. A run catches the bug when any
# suite fails (an invariant, the liveness phase, a coverage gate, or an engine assertion).
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
  patches=("$top"/yggr-sim/planted/*.patch)
fi

work=$(mktemp -d)
tree="$work/tree"
git worktree add --detach -q "$tree" HEAD
trap 'git worktree remove --force "$tree"; rm -rf "$work"' EXIT
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target/planted}

for patch in "${patches[@]}"; do
  name=$(basename "$patch" .patch)
  git -C "$tree" checkout -q -- yggr-core
  git -C "$tree" apply "$patch"
  if ! (cd "$tree" && cargo build --release -q -p yggr-sim --example suite) 2>"$work/build.log"; then
    echo "$name  does not build"
    cat "$work/build.log"
    continue
  fi
  cp "$CARGO_TARGET_DIR/release/examples/suite" "$work/suite"
  for ((seed = 1; seed <= runs; seed += 2)); do
    pids=()
    for offset in 0 1; do
      base=$((seed + offset))
      [ "$base" -le "$runs" ] || continue
      (
        start=$(date +%s.%N)
        if YGGR_SIM_SEED_BASE=$base "$work/suite" >"$work/run-$base.log" 2>&1; then
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
  first_failure=$(grep -h -m1 "FAILED\|panicked" "$work"/run-*.log 2>/dev/null | head -1 || true)
  if [ -n "$first_failure" ]; then
    echo "    e.g. ${first_failure:0:240}"
  fi
  rm -f "$work"/result-* "$work"/run-*.log
done
