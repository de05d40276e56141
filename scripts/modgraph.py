#!/usr/bin/env python3
"""Module dependency graph of crates/veltix/src; exits 1 if it has a cycle.

A module is a top-level file `X.rs` (with the files under `X/`, its submodules) or a directory
`X/` with `mod.rs`; lib.rs is the crate root, not a module. Module A depends on B when A's code
names an item of B: a path `crate::B::..`, a `use crate::{B::..}` group, or a name that lib.rs
re-exports from B (`crate::Name`, `use crate::{Name}`); an `impl B::Type` block is such a path.
Comments (doc comments too), string and char literals and `#[cfg(test)]` items (test modules,
as cargo-modules leaves them out by default) are not code here. Method calls are not seen:
keep the blocking faces from calling methods defined above them by review.

Usage: python3 scripts/modgraph.py [SRC_DIR]   (default: crates/veltix/src of this repo)
Prints `module -> deps`, then every cycle (strongly connected component); exit status 1 if
there is one. Python 3 standard library only.
"""

import os
import re
import sys


def strip_code(text):
    """`text` without comments, string/char literals (each replaced by a space)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
            continue
        m = re.match(r'b?r(#*)"', text[i:i + 260])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            i = n if j < 0 else j + len(end)
            out.append(" ")
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append(" ")
            continue
        if c == "'":
            # A char literal ('a', '\n', '\u{..}'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:i + 12])
            if m:
                i += m.end()
                out.append(" ")
                continue
        out.append(c)
        i += 1
    return "".join(out)


def item_end(text, i):
    """End of the item starting at `i`: after its first `;` at depth 0 or its braced body."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == ";" and depth == 0:
            return i + 1
        elif c == "{" and depth == 0:
            d = 0
            while i < len(text):
                if text[i] == "{":
                    d += 1
                elif text[i] == "}":
                    d -= 1
                    if d == 0:
                        return i + 1
                i += 1
            return i
        i += 1
    return i


CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]")
ATTR = re.compile(r"\s*#\s*\[[^\]]*\]")
OUT_OF_LINE_MOD = re.compile(r"\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;")


def drop_test_items(text):
    """`text` without `#[cfg(test)]` items; also returns the out-of-line test modules' names."""
    test_mods = set()
    while True:
        m = CFG_TEST.search(text)
        if not m:
            return text, test_mods
        j = m.end()
        while True:
            a = ATTR.match(text, j)
            if not a:
                break
            j = a.end()
        om = OUT_OF_LINE_MOD.match(text, j)
        if om:
            test_mods.add(om.group(1))
        text = text[: m.start()] + " " + text[item_end(text, j):]


def module_files(src):
    """{module: [files]}; a file of a `#[cfg(test)] mod x;` is left out."""
    mods = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry != "lib.rs":
            mods.setdefault(entry[:-3], []).append(path)
        elif os.path.isdir(path):
            for dirpath, _, files in os.walk(path):
                for f in sorted(files):
                    if f.endswith(".rs"):
                        mods.setdefault(entry, []).append(os.path.join(dirpath, f))
    return mods


def root_reexports(lib_text, mods):
    """Names lib.rs re-exports from a module: {name: module}."""
    names = {}
    for m in re.finditer(r"\bpub\s+use\s+(?:crate::)?(\w+)::(\{[^;]*\}|\w+)\s*;", lib_text):
        if m.group(1) not in mods:
            continue
        for part in split_group(m.group(2)):
            first = re.match(r"\s*(\w+)(?:\s+as\s+(\w+))?\s*$", part)
            if first:
                names[first.group(2) or first.group(1)] = m.group(1)
    return names


def split_group(group):
    """Top-level elements of `{a, b::{c, d}, e}` (or a single path)."""
    group = group.strip()
    if not group.startswith("{"):
        return [group]
    body, parts, depth, cur = group[1:-1], [], 0, []
    for c in body:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return [p for p in (p.strip() for p in parts) if p]


def dependencies(text, me, mods, reexp):
    deps = set()

    def name(n):
        if n in mods:
            deps.add(n)
        elif n in reexp:
            deps.add(reexp[n])

    # Paths: crate::x, $crate::x (not the `crate::{` of a group, handled below).
    for m in re.finditer(r"(?<![\w:])\$?crate\s*::\s*(\w+)", text):
        name(m.group(1))
    for m in re.finditer(r"(?<![\w:])\$?crate\s*::\s*\{", text):
        end = item_end(text, m.end() - 1)
        for part in split_group(text[m.end() - 1 : end]):
            first = re.match(r"\s*(\w+)", part)
            if first:
                name(first.group(1))
    deps.discard(me)
    return deps


def graph(src):
    mods = module_files(src)
    with open(os.path.join(src, "lib.rs"), encoding="utf-8") as f:
        reexp = root_reexports(drop_test_items(strip_code(f.read()))[0], mods)
    edges = {}
    for mod, files in mods.items():
        code, excluded = [], set()
        texts = {}
        for path in files:
            with open(path, encoding="utf-8") as f:
                texts[path] = drop_test_items(strip_code(f.read()))
            excluded |= {
                os.path.join(os.path.dirname(path), sub) for sub in texts[path][1]
            }
            if os.path.basename(path) in ("mod.rs",) or path.endswith(mod + ".rs"):
                excluded |= {os.path.join(src, mod, sub) for sub in texts[path][1]}
        for path, (text, _) in texts.items():
            stem = os.path.splitext(path)[0]
            if stem in excluded or os.path.dirname(path) in excluded:
                continue
            code.append(text)
        edges[mod] = dependencies("\n".join(code), mod, mods, reexp)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "crates", "veltix", "src")
    edges = graph(src)
    print("module graph of crates/veltix/src (A -> modules A names; tests excluded):")
    for mod in sorted(edges):
        print(f"  {mod} -> {' '.join(sorted(edges[mod])) or '(nothing)'}")
    found = cycles(edges)
    if not found:
        print("no module cycles")
        return 0
    print(f"MODULE CYCLES ({len(found)} strongly connected components):")
    for comp in found:
        inside = sorted(
            f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp
        )
        print(f"  {{{', '.join(comp)}}}: {'; '.join(inside)}")
        mutual = sorted(
            f"{a} <-> {b}" for a in comp for b in edges[a] if b in comp and a < b and a in edges[b]
        )
        if mutual:
            print(f"    mutual: {', '.join(mutual)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
