#!/usr/bin/env bash
# Starts a three-node kv cluster on 127.0.0.1 and keeps it running until Ctrl-C.
#
#   yggr-examples/run-three-node.sh            # data under ./data (of the current directory)
#   DATA_DIR=/tmp/kv yggr-examples/run-three-node.sh
#
# Node N takes Redis clients on port 600N and Raft traffic on port 700N. Each node's log is
# appended to $DATA_DIR/node-N.log. Run it again with the same data directory and the cluster
# recovers what it stored. Works from any directory. The binary it runs is
# target/release/kv of this workspace (or under $CARGO_TARGET_DIR).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$script_dir/.." && pwd)"
data_dir="${DATA_DIR:-$PWD/data}"
mkdir -p "$data_dir"
data_dir="$(cd "$data_dir" && pwd)"

echo "building kv (release)..."
cargo build --release --quiet --manifest-path "$workspace/Cargo.toml" -p yggr-examples --bin kv
target_dir="${CARGO_TARGET_DIR:-$workspace/target}"
kv="$target_dir/release/kv"

peer() { echo "$1=127.0.0.1:700$1,127.0.0.1:600$1"; }

# A cluster already running (this script started twice, say) holds the ports: stop here,
# before touching its data or its logs.
for port in 6001 6002 6003 7001 7002 7003; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: is a cluster already running? stop it first" >&2
    exit 1
  fi
done

pids=()
offsets=()
stop_all() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo
    echo "stopping the cluster..."
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    echo "stopped; data kept in $data_dir"
  fi
}
trap stop_all INT TERM EXIT

for id in 1 2 3; do
  others=()
  for other in 1 2 3; do
    [ "$other" = "$id" ] || others+=(--peer "$(peer "$other")")
  done
  # Where this run's lines start, so the leader is looked up in them only.
  offsets[id]=$(stat -c %s "$data_dir/node-$id.log" 2>/dev/null || echo 0)
  "$kv" --id "$id" --data-dir "$data_dir/node-$id" \
    --raft-addr "127.0.0.1:700$id" --client-addr "127.0.0.1:600$id" \
    "${others[@]}" >>"$data_dir/node-$id.log" 2>&1 &
  pids+=($!)
done

echo "waiting for a leader..."
leader=""
for _ in $(seq 1 300); do
  for id in 1 2 3; do
    if ! kill -0 "${pids[$((id - 1))]}" 2>/dev/null; then
      echo "node $id exited; the end of its log ($data_dir/node-$id.log):" >&2
      tail -n 20 "$data_dir/node-$id.log" >&2
      exit 1
    fi
  done
  # The latest "now the leader" line across the logs (they start with a timestamp) names it.
  leader=$(for id in 1 2 3; do tail -c +$((offsets[id] + 1)) "$data_dir/node-$id.log"; done |
    grep "this node is now the leader" | sort | tail -n 1 | sed -E 's/.*node_id=([0-9]+).*/\1/' || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
if [ -z "$leader" ]; then
  echo "no leader after 30 s; see the logs in $data_dir" >&2
  exit 1
fi

follower=$(( leader % 3 + 1 ))
cat <<EOF

three nodes are up; node $leader leads (clients: 127.0.0.1:6001-6003, data: $data_dir)

talk to it:
  redis-cli -c -p 600$leader SET hello world
  redis-cli -c -p 600$follower GET hello          # a follower redirects (MOVED) to the leader
  printf 'SET a 1\r\n' | nc -q 1 127.0.0.1 600$leader
  redis-cli -p 6001 RAFT.STATUS

Ctrl-C stops all three cleanly.
EOF
wait "${pids[@]}"
