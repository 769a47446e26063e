#!/usr/bin/env python3
"""Fails if a crate's top-level modules import sideways or upwards.

Each crate is a house of floors, listed below from the ground up: a module
(a folder or file directly under the crate's src/) may import modules on
lower floors only. So there is no import circle, and a reader can take the
floors in order, each resting only on what they have read. A module found
on no floor fails too: a new one must be given its place.

Imports are `crate::name` paths (also inside `use crate::{a, b}` groups)
in non-test code: from `#[cfg(test)]` to the end of a file, and files
named tests.rs or *_tests.rs, are test code, which may reach anywhere.
Comments are ignored. Inside one module, files may import each other.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# From the ground up. Modules on one floor do not import each other.
FLOORS = {
    "node/src": [
        ["memo", "wire", "gate"],
        ["crypto"],
        ["ledger_id"],
        ["beacon", "handshake", "npl"],
        ["ledger"],
        ["contract"],
        ["sync"],
        ["consensus"],  # the protocol: pure state machines
        ["env"],  # the seam: the traits a world implements
        ["driver", "users"],
        ["real"],  # the runtime: tokio, SQLite, processes
        ["cli"],
    ],
    "sim/src": [
        ["scenario"],  # every TOML type; imports nothing in the simulator
        ["fuzz", "check"],  # drawing concrete scenarios; the checkers
        ["world"],  # links, disks, clocks, users' routes, the trace
        ["adversary"],  # byzantine peers
        ["env"],  # the node's surroundings: net, store, contract, users
        ["runner"],
        ["picture", "shrink", "bench"],  # the tools
        ["campaign"],
    ],
}
# Crate roots: they declare the modules and may name any of them.
ROOTS = {"lib", "main"}


def code_of(path):
    text = path.read_text()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    return re.sub(r"//[^\n]*", "", text)


def imports(text):
    """Top-level module names a file's code reaches through `crate::`."""
    names = set(re.findall(r"crate::(\w+)", text))
    for group in re.finditer(r"crate::\{", text):
        depth, i, start = 1, group.end(), group.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner = text[start : i - 1]
        # Only names at the group's top level: `a::b`, `c`, `d::{e}`.
        flat, depth = "", 0
        for ch in inner:
            depth += {"{": 1, "}": -1}.get(ch, 0)
            flat += ch if depth == 0 else ""
        for item in flat.split(","):
            m = re.match(r"\s*(\w+)", item)
            if m:
                names.add(m.group(1))
    names.discard("self")
    return names


def check(src, floors):
    base = ROOT / src
    level = {m: i for i, floor in enumerate(floors) for m in floor}
    errors, edges = [], {}
    for path in sorted(base.rglob("*.rs")):
        rel = path.relative_to(base)
        module = rel.parts[0].removesuffix(".rs")
        if module in ROOTS or path.name == "tests.rs" or path.name.endswith("_tests.rs"):
            continue
        if module not in level:
            errors.append(f"{src}/{module} is on no floor: give it one in ci/floors.py")
            continue
        for other in sorted(imports(code_of(path))):
            if other == module or other not in level and other in ROOTS:
                continue
            if other not in level:
                continue  # an extern crate or a re-export the compiler checks
            edges.setdefault(module, set()).add(other)
            if level[other] >= level[module]:
                way = "sideways" if level[other] == level[module] else "upwards"
                errors.append(f"{src}/{rel} imports crate::{other} ({way}: floor "
                              f"{level[other]} from floor {level[module]})")
    return errors, edges


failed = False
for src, floors in FLOORS.items():
    errors, edges = check(src, floors)
    for e in errors:
        print(e)
    failed |= bool(errors)
    if not errors:
        print(f"{src}: {len(floors)} floors, every import downwards")
sys.exit(1 if failed else 0)
