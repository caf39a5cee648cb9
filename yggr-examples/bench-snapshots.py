#!/usr/bin/env python3
"""The measuring half of bench-snapshots.sh: runs redis-benchmark against the leader of a
running three-node kv cluster and, meanwhile, a one-request-at-a-time latency probe and a
RAFT.STATUS poller on every node; then reads the nodes' logs for the snapshot timings and
prints what happened during snapshot crossings beside what happened away from them.

Run by bench-snapshots.sh (see there); by hand:

    python3 bench-snapshots.py --leader-port 6201 --ports 6201,6202,6203 \\
        --logs node-1.log,node-2.log,node-3.log --requests 550000

The nodes must run with RUST_LOG including yggr::node=debug: their "snapshot taken; preparing it",
"snapshot prepared" and "snapshot stored" lines give each crossing's start and end.

A crossing, on one node, runs from the moment its state machine starts serializing (the
"snapshot taken" line's time less its state_machine_us and compact_us) to the moment the
snapshot is stored (the "snapshot stored" line). The union of every node's crossings, each
widened by --margin-ms on both sides, is "during"; a probe request is "during" when the time
from its send to its reply overlaps that union, and "away" otherwise. Standard library only.
"""

import argparse
import datetime
import os
import re
import socket
import subprocess
import sys
import threading
import time

VALUE = b"v" * 256


def command(*words):
    out = [b"*%d\r\n" % len(words)]
    for word in words:
        word = word if isinstance(word, bytes) else str(word).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(out)


class Connection:
    """One RESP connection: send a command, read one reply (simple, error, integer, bulk)."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def call(self, payload):
        """Sends `payload` (an encoded command); returns (kind, text): kind is '+', '-', ':'
        or '$'."""
        self.sock.sendall(payload)
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return "$", ""
            data = self._exactly(length + 2)[:-2]
            return "$", data.decode(errors="replace")
        return kind.decode(), rest.decode(errors="replace")


def segments(data_dir):
    """The names of the log segment files in a node's data directory (empty when unknown)."""
    if not data_dir:
        return frozenset()
    try:
        return frozenset(os.listdir(os.path.join(data_dir, "log")))
    except OSError:
        return frozenset()


def poll_node(port, data_dir, interval, stop, records):
    """RAFT.STATUS every `interval` seconds: (sent, took, fields) into `records`, the fields
    with the node's log segment names under 'segments'; a failed poll records fields
    {'error': ...} and reconnects."""
    connection = None
    payload = command("RAFT.STATUS")
    next_at = time.time()
    while not stop.is_set():
        sent = time.time()
        started = time.perf_counter()
        try:
            if connection is None:
                connection = Connection(port)
            kind, text = connection.call(payload)
            took = time.perf_counter() - started
            if kind == "$":
                fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
                fields["segments"] = segments(data_dir)
            else:
                fields = {"error": text}
            records.append((sent, took, fields))
        except (OSError, ConnectionError, ValueError) as error:
            records.append((sent, time.perf_counter() - started, {"error": str(error)}))
            if connection is not None:
                connection.close()
            connection = None
        next_at += interval
        delay = next_at - time.time()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.time()
    if connection is not None:
        connection.close()


def probe(port, stop, samples):
    """One SET at a time to the leader, 256-byte values over 1,000 keys of its own:
    (sent, latency, reply) into `samples`, reply '+OK' or the error text. Follows a MOVED;
    after a failure waits 10 ms and goes on."""
    connection = None
    target = port
    count = 0
    while not stop.is_set():
        payload = command("SET", "probe:%d" % (count % 1000), VALUE)
        count += 1
        sent = time.time()
        started = time.perf_counter()
        try:
            if connection is None:
                connection = Connection(target)
            kind, text = connection.call(payload)
            latency = time.perf_counter() - started
            reply = "+OK" if (kind, text) == ("+", "OK") else kind + text
            samples.append((sent, latency, reply))
            if kind == "-":
                if text.startswith("MOVED"):
                    target = int(text.rsplit(":", 1)[1])
                    connection.close()
                    connection = None
                stop.wait(0.01)
        except (OSError, ConnectionError, ValueError) as error:
            samples.append((sent, time.perf_counter() - started, "connection: %s" % error))
            if connection is not None:
                connection.close()
            connection = None
            stop.wait(0.01)
    if connection is not None:
        connection.close()


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+(\w+)\s+([\w:]+): (.*)$")


def log_time(text):
    whole, fraction = text.split(".")
    moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)
    return moment.timestamp() + float("0." + fraction)


def fields_of(message):
    return dict(re.findall(r"(\w+)=(\S+)", message))


def read_log(path):
    """The snapshot timings and leadership lines of one node's log."""
    taken, prepared, stored, leaders = [], {}, {}, []
    with open(path, errors="replace") as log:
        for line in log:
            match = LOG_LINE.match(line.strip())
            if not match:
                continue
            at, message = log_time(match.group(1)), match.group(4)
            fields = fields_of(message)
            if message.startswith("snapshot taken; preparing it"):
                taken.append((at, fields))
            elif message.startswith("snapshot prepared"):
                prepared[fields.get("index")] = (at, fields)
            elif message.startswith("snapshot stored"):
                stored[fields.get("index")] = (at, fields)
            elif "this node is now the leader" in message:
                leaders.append((at, fields))
    crossings = []
    for at, fields in taken:
        index = fields.get("index")
        serialize = int(fields.get("state_machine_us", 0)) / 1e6
        compact = int(fields.get("compact_us", 0)) / 1e6
        start = at - serialize - compact
        prepare_end = prepared.get(index, (None, {}))[0]
        store = stored.get(index)
        crossings.append({
            "index": int(index),
            "bytes": int(fields.get("bytes", 0)),
            "start": start,
            "serialized": start + serialize,
            "handed": at,
            "prepared": prepare_end,
            "prepare_us": int(prepared.get(index, (None, {}))[1].get("prepare_us", 0)),
            "stored": store[0] if store else None,
            "write_us": int(store[1].get("write_us", 0)) if store else 0,
            "serialize": serialize,
            "compact": compact,
        })
    return crossings, leaders


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def summary(latencies):
    if not latencies:
        return "n=0"
    return "n=%d  p50 %.2f ms  p99 %.2f ms  max %.2f ms" % (
        len(latencies), percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3,
        max(latencies) * 1e3)


def overlaps(start, end, windows):
    return any(start < window_end and end > window_start for window_start, window_end in windows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leader-port", type=int, required=True)
    parser.add_argument("--ports", required=True,
                        help="every node's client port, comma-separated, node 1 first")
    parser.add_argument("--logs", required=True,
                        help="every node's log, comma-separated, node 1 first")
    parser.add_argument("--data-dirs", default="",
                        help="every node's data directory, comma-separated, node 1 first "
                             "(optional: shows the log segments each crossing removed)")
    parser.add_argument("--requests", type=int, default=550000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--poll-ms", type=float, default=50)
    parser.add_argument("--margin-ms", type=float, default=200)
    parser.add_argument("--timeout-s", type=float, default=1200)
    args = parser.parse_args()
    ports = [int(port) for port in args.ports.split(",")]
    logs = args.logs.split(",")
    data_dirs = args.data_dirs.split(",") if args.data_dirs else [""] * len(ports)

    stop_polls, stop_probe = threading.Event(), threading.Event()
    polls = {node: [] for node in range(1, len(ports) + 1)}
    pollers = [threading.Thread(target=poll_node,
                                args=(port, data_dir, args.poll_ms / 1e3, stop_polls,
                                      polls[node]))
               for node, port, data_dir in zip(polls, ports, data_dirs)]
    for poller in pollers:
        poller.start()
    time.sleep(0.5)
    bench_command = ["redis-benchmark", "-p", str(args.leader_port), "-t", "set",
                     "-n", str(args.requests), "-c", str(args.clients), "-d", "256",
                     "-r", "100000", "--csv"]
    # From version 7 on, redis-benchmark prints the first error reply and exits (status 1);
    # before, it went on, and printed errors (at most one a second) only with -e.
    version = subprocess.run(["redis-benchmark", "--version"], capture_output=True, text=True)
    major = re.search(r"(\d+)\.", version.stdout)
    if major and int(major.group(1)) < 7:
        bench_command.insert(-1, "-e")
    print("load: " + " ".join(bench_command), flush=True)
    samples = []
    prober = threading.Thread(target=probe, args=(args.leader_port, stop_probe, samples))
    began = time.time()
    bench = subprocess.Popen(bench_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    prober.start()
    try:
        output, _ = bench.communicate(timeout=args.timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        bench.kill()
        output, _ = bench.communicate()
        timed_out = True
    ended = time.time()
    stop_probe.set()
    prober.join()
    time.sleep(1.0)  # a snapshot in flight at the end is stored and polled
    stop_polls.set()
    for poller in pollers:
        poller.join()
    output = output.decode(errors="replace")

    # redis-benchmark: the CSV summary, and its error lines ("Error from server: ..."). Zero
    # such lines, exit status 0 and a summary line mean every request had its +OK.
    print()
    print("redis-benchmark (%.1f s%s, exit status %s):" % (
        ended - began, ", TIMED OUT" if timed_out else "", bench.returncode))
    result = None
    error_lines = []
    for line in output.splitlines():
        if line.startswith('"SET"'):
            result = [cell.strip('"') for cell in line.split(",")]
        elif "rror" in line or "TRYAGAIN" in line or "MOVED" in line:
            error_lines.append(line)
    if result:
        print("  %s requests/s, p50 %s ms, p99 %s ms, max %s ms (avg %s, p95 %s)" % (
            result[1], result[4], result[6], result[7], result[2], result[5]))
    else:
        print("  no summary line; its output ends:")
        for line in output.splitlines()[-10:]:
            print("    " + line)
    kinds = {}
    for line in error_lines:
        kind = "TRYAGAIN" if "TRYAGAIN" in line else "MOVED" if "MOVED" in line else \
            "-ERR" if "ERR" in line else "other"
        kinds[kind] = kinds.get(kind, 0) + 1
    print("  error replies: %d %s" % (len(error_lines), kinds if kinds else ""))
    for line in error_lines[:5]:
        print("    " + line)

    # Leadership, from the polls and the logs.
    print()
    changes = 0
    for node, records in polls.items():
        terms, leaders, failed, last = [], [], 0, None
        for sent, _, fields in records:
            if "error" in fields:
                failed += 1
                continue
            term, leader = fields.get("term"), fields.get("leader_id")
            if last is not None and (term, leader) != last:
                changes += 1
                print("  node %d: term/leader %s -> %s at +%.3f s" % (
                    node, last, (term, leader), sent - began))
            last = (term, leader)
            if term not in terms:
                terms.append(term)
            if leader not in leaders:
                leaders.append(leader)
        print("node %d: %d polls (%d failed), terms seen %s, leaders seen %s, last %s" % (
            node, len(records), failed, ",".join(terms), ",".join(leaders),
            " ".join("%s:%s" % (key, records[-1][2].get(key)) for key in
                     ("role", "last_applied", "snapshots_taken", "snapshots_failed",
                      "snapshots_installed")) if records else "-"))
    new_leaders = []
    all_crossings = []
    for node, path in enumerate(logs, start=1):
        crossings, leaders = read_log(path)
        new_leaders += [(at, node) for at, _ in leaders if at >= began - 0.5]
        for crossing in crossings:
            crossing["node"] = node
        all_crossings += crossings
    print("leader changes during the run: %d (term or leader changes seen by the polls), "
          "%d 'now the leader' log lines" % (changes, len(new_leaders)))

    # The crossings.
    print()
    print("crossings (node logs; ms from the serialization's start):")
    print("  %-4s %9s %7s %10s %8s %9s %9s %9s %9s" % (
        "node", "index", "MB", "serialize", "compact", "prepare", "store", "total",
        "segments"))
    windows = []
    for crossing in sorted(all_crossings, key=lambda crossing: crossing["start"]):
        end = crossing["stored"] or crossing["prepared"] or crossing["handed"]
        windows.append((crossing["start"], end))
        # The segment files gone between the last poll before the crossing and the first
        # after it: what the store phase removed (its time is in the store column).
        ok = [(sent, fields["segments"]) for sent, _, fields in polls[crossing["node"]]
              if "error" not in fields]
        before = [names for sent, names in ok if sent < crossing["start"]]
        after = [names for sent, names in ok if sent > end]
        removed = len(before[-1] - after[0]) if before and after else "?"
        print("  %-4d %9d %7.1f %10.1f %8.1f %9.1f %9.1f %9.1f %9s   at +%.2f s" % (
            crossing["node"], crossing["index"], crossing["bytes"] / 1e6,
            crossing["serialize"] * 1e3, crossing["compact"] * 1e3,
            crossing["prepare_us"] / 1e3, crossing["write_us"] / 1e3,
            (end - crossing["start"]) * 1e3, removed, crossing["start"] - began))
    print("  (serialize: the state machine, nothing applied meanwhile; compact: the engine, in "
          "the driver; prepare: writing and syncing the file, on the side; store: the driver's "
          "write that renames it and removes the log segments it covers, with that iteration's "
          "entries; segments: log files removed)")
    margin = args.margin_ms / 1e3
    merged = []
    for start, end in sorted(windows):
        start, end = start - margin, end + margin
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    print("  %d crossing windows (every node's crossing widened by %.0f ms, overlaps merged): %s"
          % (len(merged), args.margin_ms, ", ".join(
              "+%.2f..+%.2f s" % (start - began, end - began) for start, end in merged)))

    for number, window in enumerate(merged, start=1):
        inside = [lat for sent, lat, reply in samples
                  if reply == "+OK" and overlaps(sent, sent + lat, [window])]
        print("    window %d: probe %s" % (number, summary(inside)))

    # The probe, during and away.
    print()
    during = [lat for sent, lat, reply in samples
              if reply == "+OK" and overlaps(sent, sent + lat, merged)]
    away = [lat for sent, lat, reply in samples
            if reply == "+OK" and not overlaps(sent, sent + lat, merged)]
    probe_errors = [(sent, reply) for sent, _, reply in samples if reply != "+OK"]
    print("probe (one SET at a time to the leader, beside the load):")
    print("  during a crossing: " + summary(during))
    print("  away from one:     " + summary(away))
    print("  error replies: %d" % len(probe_errors))
    for sent, reply in probe_errors[:5]:
        print("    +%.3f s: %s" % (sent - began, reply))
    # Within a crossing: the requests overlapping each node's phases, and the phases the
    # slowest request of each window overlapped.
    roles = {}
    for node, records in polls.items():
        roles[node] = "leader" if any(fields.get("role") == "leader"
                                      for _, _, fields in records) else "follower"
    spans = []
    for crossing in all_crossings:
        node = crossing["node"]
        spans.append((crossing["start"], crossing["serialized"], node, "serialize"))
        spans.append((crossing["serialized"], crossing["handed"], node, "compact"))
        if crossing["prepared"]:
            spans.append((crossing["handed"], crossing["prepared"], node, "prepare"))
        if crossing["stored"]:
            spans.append((crossing["stored"] - crossing["write_us"] / 1e6, crossing["stored"],
                          node, "store"))
    print("  requests overlapping each phase (no margin):")
    for role in ("leader", "follower"):
        for phase in ("serialize", "compact", "prepare", "store"):
            chosen = [(start, end) for start, end, node, name in spans
                      if name == phase and roles[node] == role]
            hit = [lat for sent, lat, reply in samples
                   if reply == "+OK" and overlaps(sent, sent + lat, chosen)]
            print("    %-8s %-9s  %s" % (role, phase, summary(hit)))
    print("  the slowest request of each window, and the phases it overlapped:")
    for number, window in enumerate(merged, start=1):
        inside = [(lat, sent) for sent, lat, reply in samples
                  if reply == "+OK" and overlaps(sent, sent + lat, [window])]
        if not inside:
            continue
        lat, sent = max(inside)
        hit = ["node %d (%s) %s %.0f ms" % (node, roles[node], name, (end - start) * 1e3)
               for start, end, node, name in sorted(spans)
               if start < sent + lat and end > sent]
        print("    window %d: %.1f ms at +%.2f s: %s" % (
            number, lat * 1e3, sent - began, "; ".join(hit) if hit else "none"))
    # The driver's responsiveness: RAFT.STATUS is answered by the driver.
    status_during, status_away = [], []
    for records in polls.values():
        for sent, took, fields in records:
            if "error" in fields:
                continue
            (status_during if overlaps(sent, sent + took, merged) else status_away).append(took)
    print("RAFT.STATUS round trips (answered by each node's driver):")
    print("  during a crossing: " + summary(status_during))
    print("  away from one:     " + summary(status_away))
    clean = (changes == 0 and not new_leaders and not error_lines and not probe_errors
             and not timed_out and bench.returncode == 0 and result is not None)
    print()
    print("RESULT: %s" % ("clean (no leader change, no error reply)" if clean else
                          "NOT CLEAN: see above"))
    return 0 if clean else 2


if __name__ == "__main__":
    sys.exit(main())
