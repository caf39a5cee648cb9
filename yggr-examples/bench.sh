#!/usr/bin/env bash
# Benchmarks the three-node kv cluster with redis-benchmark: SET and GET against the leader
# with 1, 16, 64 and 256 clients, 256-byte values, random keys (-r 100000), and prints a
# table next to the disk's fdatasync rate measured in the same run.
#
#   yggr-examples/bench.sh                 # REQUESTS=20000, the default
#   REQUESTS=30000 yggr-examples/bench.sh  # what BENCHMARKS.md's figures were measured with
#
# REQUESTS (default 20000) sets each cell's request count: REQUESTS/4 with 1 client, REQUESTS
# with 16, and 2 x REQUESTS with 64 and 256 (the default run sends 210,000 requests in all).
#
# Needs redis-benchmark (Debian/Ubuntu: `apt-get install redis-tools`) and python3 (for the
# fdatasync reference). Uses ports 6101-6103 and 7101-7103 and a scratch data directory.
set -euo pipefail

if ! command -v redis-benchmark >/dev/null; then
  echo "redis-benchmark is missing: install it with 'apt-get install redis-tools' (Debian/Ubuntu)" >&2
  echo "or 'brew install redis' (macOS), then run this again." >&2
  exit 1
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$script_dir/.." && pwd)"
requests="${REQUESTS:-20000}"
data_dir="$(mktemp -d "${TMPDIR:-/var/tmp}/kv-bench.XXXXXX")"

echo "building kv (release)..."
cargo build --release --manifest-path "$workspace/Cargo.toml" -p yggr-examples --bin kv
kv="${CARGO_TARGET_DIR:-$workspace/target}/release/kv"

pids=()
cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  rm -rf "$data_dir"
}
trap cleanup EXIT

echo "disk reference (in $data_dir):"
python3 "$script_dir/disk-reference.py" "$data_dir/fsync-probe"

for id in 1 2 3; do
  peers=()
  for other in 1 2 3; do
    [ "$other" = "$id" ] || peers+=(--peer "$other=127.0.0.1:710$other,127.0.0.1:610$other")
  done
  "$kv" --id "$id" --data-dir "$data_dir/node-$id" --raft-addr "127.0.0.1:710$id" \
    --client-addr "127.0.0.1:610$id" "${peers[@]}" \
    >"$data_dir/node-$id.log" 2>&1 &
  pids+=($!)
done

leader=""
for _ in $(seq 1 300); do
  leader=$(grep -h "this node is now the leader" "$data_dir"/node-*.log 2>/dev/null | sort |
    tail -n 1 | sed -E 's/.*node_id=([0-9]+).*/\1/' || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { echo "no leader elected; logs in $data_dir" >&2; exit 1; }
port="610$leader"
# Wait until the leader answers (its address book and first commit are in).
for _ in $(seq 1 100); do
  redis-cli -p "$port" SET warmup 1 >/dev/null 2>&1 && break
  sleep 0.1
done
echo "leader: node $leader (port $port)"
echo
printf '%-5s %8s %12s %10s %10s\n' test clients "requests/s" "p50 ms" "p99 ms"
for test in set get; do
  for clients in 1 16 64 256; do
    count=$((requests * (clients >= 64 ? 2 : 1)))
    [ "$clients" = 1 ] && count=$((requests / 4))
    line=$(redis-benchmark -p "$port" -t "$test" -n "$count" -c "$clients" -d 256 -r 100000 --csv 2>/dev/null |
      grep -i "^\"$test\"" | tail -n 1)
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    rps=$(echo "$line" | cut -d, -f2 | tr -d '"')
    p50=$(echo "$line" | cut -d, -f5 | tr -d '"')
    p99=$(echo "$line" | cut -d, -f7 | tr -d '"')
    printf '%-5s %8s %12s %10s %10s\n' "$test" "$clients" "$rps" "$p50" "$p99"
  done
done
