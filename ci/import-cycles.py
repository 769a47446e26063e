#!/usr/bin/env python3
"""Fails if the protocol's top-level modules import each other in a circle.

Each folder or file directly under node/src is a module; a module imports
another when its non-test code names `crate::other`. The real runtime
(`real`, `cli`) may import anything and nothing imports it, so it is left
out. Test code (from `#[cfg(test)]` to the end of a file, and *_tests.rs)
is left out too: a test may reach across modules.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "node" / "src"
SKIP = {"real", "cli", "main", "lib"}

def module_of(path):
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")

edges = {}
for path in SRC.rglob("*.rs"):
    m = module_of(path)
    if m in SKIP or path.name.endswith("_tests.rs"):
        continue
    text = path.read_text()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    for other in re.findall(r"crate::(\w+)", text):
        if other != m and other not in SKIP:
            edges.setdefault(m, set()).add(other)

# Depth-first search for a cycle, reported as the path that closes it.
state, stack = {}, []
def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(edges.get(m, ())):
        if state.get(n) == "open":
            cycle = stack[stack.index(n):] + [n]
            sys.exit("import circle among protocol modules: " + " -> ".join(cycle))
        if n not in state:
            visit(n)
    stack.pop()
    state[m] = "done"

for m in sorted(edges):
    if m not in state:
        visit(m)
order = " ".join(f"{m}->{','.join(sorted(edges[m]))}" for m in sorted(edges))
print(f"no import circle among protocol modules ({order})")
