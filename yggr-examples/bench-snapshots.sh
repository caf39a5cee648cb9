#!/usr/bin/env bash
# Measures the three-node kv cluster across snapshot crossings: redis-benchmark SETs against
# the leader (-c 50 -d 256 -r 100000) long enough for five snapshots at the default
# threshold (one every 100,000 entries), while bench-snapshots.py polls RAFT.STATUS on every
# node and runs a one-request-at-a-time latency probe beside the load. Prints the leader
# changes and error replies (both should be 0), redis-benchmark's throughput and latency, each
# node's snapshot timings from its log, and the probe's p50/p99/max during a crossing beside
# the same figures away from one; first, the disk's fdatasync rate measured in the same run.
#
#   yggr-examples/bench-snapshots.sh                      # 550,000 SETs: five crossings
#   REQUESTS=650000 yggr-examples/bench-snapshots.sh      # six
#
# Environment:
#   REQUESTS            redis-benchmark's request count (default 550000)
#   CLIENTS             redis-benchmark's connections (default 50)
#   SNAPSHOT_THRESHOLD  passed to every node as --snapshot-threshold (default: kv's, 100000)
#   MARGIN_MS           how far either side of a crossing still counts as during it (200)
#   POLL_MS             RAFT.STATUS period per node (50)
#   CLIENT_PORT_BASE    node N takes clients on CLIENT_PORT_BASE + N (default 6200)
#   RAFT_PORT_BASE      node N takes Raft traffic on RAFT_PORT_BASE + N (default 7200)
#   KEEP=1              keep the data directory and logs (kept anyway when the run is not
#                       clean: a leader change or an error reply)
#
# Needs redis-benchmark (Debian/Ubuntu: `apt-get install redis-tools`) and python3. The nodes
# log yggr::node at debug (RUST_LOG=info,yggr::node=debug): its snapshot lines time each
# crossing (the engine's per-commit debug lines stay off).
# Stops by itself: redis-benchmark is given 20 minutes at most.
set -euo pipefail

for tool in redis-benchmark redis-cli; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is missing: install it with 'apt-get install redis-tools' (Debian/Ubuntu)" >&2
    echo "or 'brew install redis' (macOS), then run this again." >&2
    exit 1
  fi
done
command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$script_dir/.." && pwd)"
requests="${REQUESTS:-550000}"
clients="${CLIENTS:-50}"
client_port_base="${CLIENT_PORT_BASE:-6200}"
raft_port_base="${RAFT_PORT_BASE:-7200}"
for number in "$requests" "$clients" "$client_port_base" "$raft_port_base" \
  "${SNAPSHOT_THRESHOLD:-0}" "${MARGIN_MS:-200}" "${POLL_MS:-50}"; do
  [[ "$number" =~ ^[0-9]+$ ]] || { echo "expected a whole number, got '$number'" >&2; exit 1; }
done
[ "$client_port_base" -le 65530 ] && [ "$raft_port_base" -le 65530 ] ||
  { echo "CLIENT_PORT_BASE and RAFT_PORT_BASE must be at most 65530" >&2; exit 1; }
client_port() { echo $((client_port_base + $1)); }
raft_port() { echo $((raft_port_base + $1)); }
for id in 1 2 3; do
  for port in "$(client_port "$id")" "$(raft_port "$id")"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port is in use: set CLIENT_PORT_BASE / RAFT_PORT_BASE" >&2
      exit 1
    fi
  done
done

echo "building kv (release)..."
cargo build --release --manifest-path "$workspace/Cargo.toml" -p yggr-examples --bin kv
kv="${CARGO_TARGET_DIR:-$workspace/target}/release/kv"
data_dir="$(mktemp -d "${TMPDIR:-/var/tmp}/kv-bench-snapshots.XXXXXX")"

pids=()
keep="${KEEP:-0}"
cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ "$keep" = 1 ]; then
    echo "data and node logs kept in $data_dir"
  else
    rm -rf "$data_dir"
  fi
}
trap cleanup EXIT

echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "disk reference (in $data_dir):"
python3 "$script_dir/disk-reference.py" --snapshot-costs "$data_dir/fsync-probe"

threshold_args=()
[ -n "${SNAPSHOT_THRESHOLD:-}" ] && threshold_args=(--snapshot-threshold "$SNAPSHOT_THRESHOLD")
for id in 1 2 3; do
  peers=()
  for other in 1 2 3; do
    [ "$other" = "$id" ] ||
      peers+=(--peer "$other=127.0.0.1:$(raft_port "$other"),127.0.0.1:$(client_port "$other")")
  done
  RUST_LOG="info,yggr::node=debug" "$kv" --id "$id" --data-dir "$data_dir/node-$id" \
    --raft-addr "127.0.0.1:$(raft_port "$id")" --client-addr "127.0.0.1:$(client_port "$id")" \
    "${peers[@]}" "${threshold_args[@]}" >"$data_dir/node-$id.log" 2>&1 &
  pids+=($!)
done

leader=""
for _ in $(seq 1 300); do
  leader=$(grep -h "this node is now the leader" "$data_dir"/node-*.log 2>/dev/null | sort |
    tail -n 1 | sed -E 's/.*node_id=([0-9]+).*/\1/' || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { keep=1; echo "no leader elected" >&2; exit 1; }
port="$(client_port "$leader")"
for _ in $(seq 1 100); do
  redis-cli -p "$port" SET warmup 1 >/dev/null 2>&1 && break
  sleep 0.1
done
echo "leader: node $leader (port $port);" \
  "snapshot threshold: ${SNAPSHOT_THRESHOLD:-100000 (kv default)}"

status=0
python3 "$script_dir/bench-snapshots.py" --leader-port "$port" \
  --ports "$(client_port 1),$(client_port 2),$(client_port 3)" \
  --logs "$data_dir/node-1.log,$data_dir/node-2.log,$data_dir/node-3.log" \
  --data-dirs "$data_dir/node-1,$data_dir/node-2,$data_dir/node-3" \
  --requests "$requests" --clients "$clients" --margin-ms "${MARGIN_MS:-200}" \
  --poll-ms "${POLL_MS:-50}" --timeout-s 1200 || status=$?
if [ "$status" != 0 ]; then
  keep=1
  grep -hiE "warn|error|leader" "$data_dir"/node-*.log | tail -n 20 >&2 || true
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
