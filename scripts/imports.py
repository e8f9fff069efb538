#!/usr/bin/env python3
"""The import graph of src/: which file refers to which, through every `crate::` path (use lines
and inline paths alike; `super::` resolved too), and its cycles (strongly connected components).

    scripts/imports.py                 print every cycle of more than one file, largest first
    scripts/imports.py --max 3         exit 1 when a cycle has more than 3 files or spans two
                                       module folders (the rule of the command-line issue)
    scripts/imports.py --layers        exit 1 when a file below the front ends refers to a front
                                       end, the request layer or the option table (LAYERS below;
                                       docs/architecture.md)

A reference to `crate::a::b::c` is taken to the deepest file that exists (`src/a/b.rs`,
`src/a/b/mod.rs`, then `src/a.rs`, `src/a/mod.rs`); a reference to a module's item in its
`mod.rs` lands on that `mod.rs`.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def files():
    out = []
    for base, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                out.append(os.path.relpath(os.path.join(base, n), ROOT))
    return sorted(out)


def module_of(rel):
    """The module path of a file: `backup/copy.rs` -> ['backup', 'copy']; `lib.rs` -> []."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def file_of(segments, known):
    """The deepest existing file for a module path."""
    for n in range(len(segments), -1, -1):
        head = segments[:n]
        if not head:
            return "lib.rs"
        for cand in (os.path.join(*head) + ".rs", os.path.join(*head, "mod.rs")):
            if cand in known:
                return cand
    return None


def strip_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks: test code may reach anywhere."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def graph():
    known = set(files())
    edges = {f: set() for f in known}
    for f in known:
        text = strip_tests(open(os.path.join(ROOT, f), encoding="utf-8").read())
        text = re.sub(r"//[^\n]*", "", text)
        here = module_of(f)
        refs = []
        for m in USE_GROUP.finditer(text):
            for item in re.split(r",", m.group(3)):
                item = item.strip().split(" as ")[0].strip()
                if item and item != "self":
                    refs.append((m.group(1), m.group(2) + "::" + item.replace("::{", "::").split("::{")[0]))
        for m in PATH.finditer(text):
            refs.append((m.group(1), m.group(2)))
        # Paths through this file's own child modules (`mod copy;` then `copy::Prior`).
        children = re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", text, re.M)
        for child in children:
            for m in re.finditer(r"(?<![:\w])" + child + r"((?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
                refs.append(("self", "::" + child + m.group(1)))
            if re.search(r"\buse\s+" + child + r"::\{", text):
                refs.append(("self", "::" + child))
        for root, path in refs:
            segs = [s for s in path.split("::") if s]
            if root == "self":
                segs = here + segs
            elif root == "super":
                base = here[:-1] if not f.endswith("mod.rs") else here[:-1]
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
                segs = base + segs
            target = file_of(segs, known)
            if target and target != f:
                edges[f].add(target)
    return edges


def cycles(edges):
    """Tarjan's strongly connected components with more than one file."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out, key=len, reverse=True)


def folder(f):
    return os.path.dirname(f) or "."


# Front ends (the pgBackRest command line, WAL-G's environment, the TLS server, the binary's
# entry), the request layer that resolves options into typed requests, and the option table:
# nothing else may refer to them. Everything else is the engine and what it stands on.
ABOVE_ENGINE = ("commands/", "walg/", "server/", "request/", "config/", "lib.rs", "main.rs")


def above(f):
    return any(f == a or f.startswith(a) for a in ABOVE_ENGINE)


def layer_breaches(edges):
    return sorted((f, t) for f, ts in edges.items() if not above(f) for t in ts if above(t))


def main():
    limit = None
    if "--max" in sys.argv:
        limit = int(sys.argv[sys.argv.index("--max") + 1])
    edges = graph()
    if "--layers" in sys.argv:
        breaches = layer_breaches(edges)
        for f, t in breaches:
            print(f"{f} refers to {t}, above it")
        if breaches:
            print(f"imports: {len(breaches)} reference(s) from the engine up to a front end, the requests or the options", file=sys.stderr)
            sys.exit(1)
        print("layers: no file below the front ends refers to them, the requests or the options")
    found = cycles(edges)
    bad = []
    for comp in found:
        spans = len({folder(f) for f in comp}) > 1
        print(f"{len(comp)} files{' (spanning folders)' if spans else ''}: {' '.join(comp)}")
        if limit is not None and (len(comp) > limit or spans):
            bad.append(comp)
    if not found:
        print("no cycles")
    if bad:
        print(f"imports: {len(bad)} cycle(s) break the rule (more than {limit} files, or across folders)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
