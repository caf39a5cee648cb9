#!/usr/bin/env bash
# Starts a three-node kv cluster on 127.0.0.1 and keeps it running until Ctrl-C.
#
#   yggr-examples/run-three-node.sh            # data under ./data (of the current directory)
#   DATA_DIR=/tmp/kv yggr-examples/run-three-node.sh
#   CLIENT_PORT_BASE=6100 RAFT_PORT_BASE=7100 yggr-examples/run-three-node.sh
#
# Environment:
#   DATA_DIR          where the nodes keep their data and logs (default: ./data)
#   CLIENT_PORT_BASE  node N takes Redis clients on port CLIENT_PORT_BASE + N (default 6000:
#                     ports 6001-6003)
#   RAFT_PORT_BASE    node N takes Raft traffic on port RAFT_PORT_BASE + N (default 7000:
#                     ports 7001-7003)
#   CARGO_TARGET_DIR  where cargo builds (default: target/ of this workspace)
#
# Each node's log is appended to $DATA_DIR/node-N.log. A node that exits while the others run
# is reported with its exit status and the end of its log, together with the command that
# starts it again; the others keep running. Run the script again with the same data directory
# and the cluster recovers what it stored. Works from any directory. The binary it runs is
# target/release/kv of this workspace (or under $CARGO_TARGET_DIR), built first.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$script_dir/.." && pwd)"
data_dir="${DATA_DIR:-$PWD/data}"
client_port_base="${CLIENT_PORT_BASE:-6000}"
raft_port_base="${RAFT_PORT_BASE:-7000}"
for base in "$client_port_base" "$raft_port_base"; do
  if ! [[ "$base" =~ ^[0-9]+$ ]] || [ "$base" -lt 1 ] || [ "$base" -gt 65530 ]; then
    echo "CLIENT_PORT_BASE and RAFT_PORT_BASE must be numbers from 1 to 65530, got '$base'" >&2
    exit 1
  fi
done
mkdir -p "$data_dir"
data_dir="$(cd "$data_dir" && pwd)"

# Cargo prints each crate as it compiles: a first build takes minutes, and shows it.
echo "building kv (release)..."
cargo build --release --manifest-path "$workspace/Cargo.toml" -p yggr-examples --bin kv
target_dir="${CARGO_TARGET_DIR:-$workspace/target}"
kv="$target_dir/release/kv"

client_port() { echo $((client_port_base + $1)); }
raft_port() { echo $((raft_port_base + $1)); }
peer() { echo "$1=127.0.0.1:$(raft_port "$1"),127.0.0.1:$(client_port "$1")"; }

# A cluster already running (this script started twice, say) holds the ports: stop here,
# before touching its data or its logs.
for id in 1 2 3; do
  for port in "$(client_port "$id")" "$(raft_port "$id")"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port is in use: is a cluster already running? stop it first" >&2
      exit 1
    fi
  done
done

# Sets the array `node_argv` to the command line of node $1.
node_command() {
  node_argv=("$kv" --id "$1" --data-dir "$data_dir/node-$1"
    --raft-addr "127.0.0.1:$(raft_port "$1")" --client-addr "127.0.0.1:$(client_port "$1")")
  for other in 1 2 3; do
    [ "$other" = "$1" ] || node_argv+=(--peer "$(peer "$other")")
  done
}

# Prints $1 as the shell reads it back: plain when it needs no quoting.
shell_word() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$1"; else printf '%q' "$1"; fi
}

# What to type to start node $1 again by hand (from any directory).
restart_command() {
  local word
  node_command "$1"
  for word in "${node_argv[@]}"; do
    shell_word "$word"
    printf ' '
  done
  printf '>>'
  shell_word "$data_dir/node-$1.log"
  printf ' 2>&1 &\n'
}

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
trap stop_all EXIT
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

for id in 1 2 3; do
  # Where this run's lines start, so the leader is looked up in them only.
  offsets[id]=$(stat -c %s "$data_dir/node-$id.log" 2>/dev/null || echo 0)
  node_command "$id"
  "${node_argv[@]}" >>"$data_dir/node-$id.log" 2>&1 &
  pids+=($!)
done

# Reports every node that has exited since the last call (its status and the end of its log)
# and takes it off `pids`. Returns 1 if one had.
report_exits() {
  local exited=0 index pid status
  for index in "${!pids[@]}"; do
    pid="${pids[$index]}"
    kill -0 "$pid" 2>/dev/null && continue
    status=0
    wait "$pid" 2>/dev/null || status=$?
    local id=$((index + 1))
    if [ "$status" -gt 128 ]; then
      echo "node $id (pid $pid) was killed by signal $((status - 128)) ($(kill -l $((status - 128))))" >&2
    else
      echo "node $id (pid $pid) exited with status $status" >&2
    fi
    echo "the end of its log ($data_dir/node-$id.log):" >&2
    tail -n 20 "$data_dir/node-$id.log" | sed 's/^/    /' >&2
    unset "pids[$index]"
    exited=1
  done
  [ "$exited" = 0 ]
}

echo "waiting for a leader..."
leader=""
for _ in $(seq 1 300); do
  report_exits || exit 1
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

three nodes are up; node $leader leads (clients: 127.0.0.1:$(client_port 1)-$(client_port 3), Raft: $(raft_port 1)-$(raft_port 3), data: $data_dir)

talk to it:
  redis-cli -c -p $(client_port "$leader") SET hello world
  redis-cli -c -p $(client_port "$follower") GET hello          # a follower redirects (MOVED) to the leader
  printf 'SET a 1\r\n' | nc -q 1 127.0.0.1 $(client_port "$leader")
  redis-cli -p $(client_port 1) RAFT.STATUS             # node 1's own view (answered locally)

stop one node and start it again (this script reports the exit; the restarted node runs on
its own, outside this script's Ctrl-C):
  kill ${pids[$((follower - 1))]}                      # node $follower
  $(restart_command "$follower")

Ctrl-C stops all three cleanly.
EOF

# Watch the nodes until Ctrl-C: one that exits is reported, with the command that restarts it.
while [ ${#pids[@]} -gt 0 ]; do
  sleep 1
  before=("${!pids[@]}")
  if ! report_exits; then
    for index in "${before[@]}"; do
      if [ -z "${pids[$index]+set}" ]; then
        echo "start node $((index + 1)) again with:" >&2
        echo "  $(restart_command $((index + 1)))" >&2
      fi
    done
  fi
done
echo "every node has exited"
