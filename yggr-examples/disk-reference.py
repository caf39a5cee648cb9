#!/usr/bin/env python3
"""The disk's own figures, measured beside a benchmark so its results can be read against them.

    disk-reference.py PROBE_PATH               # 256-byte append + fdatasync, serial, 3 s
    disk-reference.py --snapshot-costs PROBE_PATH
        # also: 32 MiB written then fsynced (what preparing a snapshot of that size costs the
        # disk alone) and a synced 64 MiB file unlinked with its directory fsynced (what
        # removing one log segment costs)

PROBE_PATH is a file to create in the directory under test (the benchmark's data directory);
it is removed afterwards.
"""
import os
import sys
import time


def fdatasync_rate(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    block = b"x" * 256
    samples = []
    end = time.monotonic() + 3
    while time.monotonic() < end:
        start = time.monotonic()
        os.write(fd, block)
        os.fdatasync(fd)
        samples.append(time.monotonic() - start)
    os.close(fd)
    os.unlink(path)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
    print(f"  256-byte append + fdatasync, serial, 3 s: {len(samples) / 3:.0f}/s, "
          f"p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us")


def write_synced(path, chunk, mebibytes):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    start = time.monotonic()
    for _ in range(mebibytes):
        os.write(fd, chunk)
    written = time.monotonic()
    os.fsync(fd)
    synced = time.monotonic()
    os.close(fd)
    return written - start, synced - written


def snapshot_costs(path):
    chunk = os.urandom(1 << 20)
    write, sync = write_synced(path, chunk, 32)
    os.unlink(path)
    print(f"  32 MiB written then fsynced: write {write * 1e3:.0f} ms, fsync {sync * 1e3:.0f} ms")
    write_synced(path, chunk, 64)
    start = time.monotonic()
    os.unlink(path)
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    os.fsync(directory)
    os.close(directory)
    print(f"  a synced 64 MiB file unlinked, directory fsynced: "
          f"{(time.monotonic() - start) * 1e3:.0f} ms")


def main():
    arguments = sys.argv[1:]
    costs = "--snapshot-costs" in arguments
    paths = [argument for argument in arguments if argument != "--snapshot-costs"]
    if len(paths) != 1:
        sys.exit(__doc__)
    fdatasync_rate(paths[0])
    if costs:
        snapshot_costs(paths[0])


if __name__ == "__main__":
    main()
