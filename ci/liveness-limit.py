#!/usr/bin/env python3
"""Where byzantine nodes start to stall the chain, measured.

For each UNL size n and each number f of byzantine nodes below the safety
bound (2 * close - n), runs a 20 s network at the default thresholds
(stages 50/65/80, close 80%) with f nodes in one role (default: colluders,
who split the honest nodes and show each half another candidate) over a
few seeds, and prints how many ledgers the slowest honest node closed. A
run is stalled when that is under a quarter of a healthy run's. "owed"
says whether the simulator owes liveness there: the honest nodes alone
reach every threshold.

    cargo build --release -p hotpocket-sim
    python3 ci/liveness-limit.py [--sizes 4,5,7,10,13,16] [--seeds 5] [--role colluder]
"""

import argparse
import json
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(HERE, "..", "target", "release", "hotpocket-sim")
DURATION_MS = 20000


def needed(n, pct):
    """Votes a threshold of pct% of n nodes takes (the node's rounding)."""
    return (n * pct + 99) // 100


def scenario(n, f, role):
    nodes = "".join(
        f'\n[[node]]\nid = {i}\nrole = "{role}"\n' for i in range(n - f, n)
    )
    return f"""name = "liveness-limit"
description = "{n} nodes, {f} {role}"
duration_ms = {DURATION_MS}
nodes = {n}
{nodes}
[[workload]]
every_ms = 100
start_ms = 500
stop_ms = {DURATION_MS - 2000}
"""


def slowest(n, f, role, seed, tmp):
    path = os.path.join(tmp, f"n{n}-f{f}.toml")
    with open(path, "w") as fh:
        fh.write(scenario(n, f, role))
    out = subprocess.run(
        [SIM, "run", path, "--seed", str(seed), "--json"],
        capture_output=True,
        text=True,
    )
    report = json.loads(out.stdout)
    honest = [x["seq"] for x in report["nodes"] if x["role"] == "honest"]
    safe = not any(v["kind"] != "liveness" for v in report["violations"])
    return min(honest), safe


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--sizes", default="4,5,7,10,13,16")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--role", default="colluder")
    args = ap.parse_args()
    print("n   f  owed  stalled/runs  slowest honest node's ledgers (per seed)")
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, args.sizes.split(",")):
            close = needed(n, 80)
            bound = 2 * close - n
            healthy = None
            for f in range(0, bound):
                owed = n - f >= close
                got = [slowest(n, f, args.role, s, tmp) for s in range(1, args.seeds + 1)]
                seqs = [g[0] for g in got]
                if f == 0:
                    healthy = min(seqs)
                stalled = sum(1 for s in seqs if s * 4 < healthy)
                unsafe = "" if all(g[1] for g in got) else "  SAFETY VIOLATION"
                print(
                    f"{n:<3} {f:<2} {'yes' if owed else 'no':<5} "
                    f"{stalled}/{len(seqs):<11} {seqs}{unsafe}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
