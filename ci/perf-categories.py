#!/usr/bin/env python3
"""Groups a perf profile of the simulator by what the time went to.

    perf record -e cpu-clock -F 1000 --call-graph dwarf,65528 -o perf.data \\
        target/release/hotpocket-sim run scenarios/lossy.toml --seed 7
    perf script -i perf.data | python3 ci/perf-categories.py

Each sample counts once, for the first category (in the order below) that
any frame of its stack matches; docs/performance.md's "where the time goes" table
is this script's output before and after the simulator-speed work.
"""
import collections
import sys

CATEGORIES = [
    ("ed25519 checks", ["verify_strict", "VerifyingKey::from_bytes", "PubKey::from_hex"]),
    ("signing", ["Keypair::sign"]),
    ("simulated contract", ["hotpocket_sim::contract"]),
    ("checkers", ["hotpocket_sim::checker", "beacon_check", "hotpocket_sim::outputs",
                  "verdict_check", "npl_check"]),
    ("encoding and decoding", ["postcard", "wire::", "encode", "decode"]),
    ("sha256", ["sha2::", "Hasher"]),
    ("protocol", ["hotpocket_node::"]),
    ("simulated network, world", ["hotpocket_sim::"]),
    ("madsim", ["madsim"]),
]


def main():
    counts = collections.Counter()
    total = 0
    stack = []

    def flush():
        nonlocal total
        if not stack:
            return
        total += 1
        for name, keys in CATEGORIES:
            if any(k in f for f in stack for k in keys):
                counts[name] += 1
                return
        counts["other"] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            stack.clear()
        elif line[0] in " \t":
            stack.append(line.strip())
    flush()
    if total == 0:
        sys.exit("no samples on stdin (pipe `perf script` output in)")
    for name, n in counts.most_common():
        print(f"{name:26s} {100 * n / total:5.1f}%")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
