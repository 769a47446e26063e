#!/usr/bin/env python3
"""Fails if a relative link in a markdown file does not resolve.

Finds every *.md in the repository (not under target/, .git/ or node_modules/), and checks
that each relative link [text](path) or [text](path#anchor) names an
existing file or directory inside the repository. Anchors are not checked;
links with a scheme (https:, mailto:) and bare anchors (#x) are skipped.
Code spans and fenced code blocks are left out. Exits 1, listing the
broken links as FILE:LINE: TARGET (why).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SKIP_DIRS = {"target", ".git", "node_modules"}
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files():
    for path in sorted(ROOT.rglob("*.md")):
        rel = path.relative_to(ROOT)
        if SKIP_DIRS.intersection(rel.parts[:-1]):
            continue
        yield path


def links(text):
    """(line number, target) for every link outside code."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*(```|~~~)", line):
            fenced = not fenced
            continue
        if fenced:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for m in LINK.finditer(line):
            yield n, m.group(1)


def main():
    broken = []
    count = 0
    for path in markdown_files():
        for n, target in links(path.read_text(encoding="utf-8")):
            if target.startswith("#") or SCHEME.match(target) or target.startswith("//"):
                continue
            count += 1
            where = f"{path.relative_to(ROOT)}:{n}: {target}"
            file_part = target.split("#", 1)[0]
            if file_part.startswith("/"):
                broken.append(f"{where} (absolute path)")
                continue
            resolved = (path.parent / file_part).resolve()
            try:
                resolved.relative_to(ROOT)
            except ValueError:
                broken.append(f"{where} (outside the repository)")
                continue
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
    if broken:
        print(f"{len(broken)} broken link(s):")
        for b in broken:
            print("  " + b)
        return 1
    print(f"check-links: {count} relative links, all resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
