#!/usr/bin/env python3
"""Keeps the shape of src/ (issue 15): no import cycle between top-level modules,
and no source file over the size limit.

    python3 scripts/check-shape.py            # check; exit 1 with the reasons
    python3 scripts/check-shape.py --graph    # also print the module graph

A top-level module is a file `src/x.rs` or a folder `src/x/`. An edge x -> y is any
`crate::y` path in x's non-test code (`use crate::y::..`, `use crate::{y::.., ..}`,
or an inline `crate::y::f()`). Test code (from a `#[cfg(test)]` line on) is left out:
tests may reach anywhere, and so may files named `tests.rs`/`*_tests.rs`. `main.rs` is a binary, not a module of the library.
"""
import re
import sys
from pathlib import Path

MAX_LINES = 900
ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
# Files whose length is data, not logic, may say so here with the reason.
SIZE_EXEMPT: dict[str, str] = {}


def top_module(path: Path) -> str | None:
    rel = path.relative_to(SRC)
    if len(rel.parts) == 1:
        name = rel.stem
        return None if name in ("main", "lib") else name
    return rel.parts[0]


def non_test_code(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.strip().startswith("#[cfg(test)]"):
            break
        lines.append(line)
    code = "\n".join(lines)
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    return "\n".join(l.split("//")[0] if not l.lstrip().startswith("//") else "" for l in code.splitlines())


def crate_refs(code: str) -> set[str]:
    refs = set()
    # use crate::{a::b, c, d::{e, f}};  -> a, c, d
    for group in re.finditer(r"crate::\{", code):
        depth, i, start = 1, group.end(), group.end()
        while i < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        inner = code[start : i - 1]
        # top-level items of the group: split on commas at depth 0
        depth, item = 0, ""
        for ch in inner + ",":
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                m = re.match(r"\s*([a-z_][a-z0-9_]*)", item)
                if m:
                    refs.add(m.group(1))
                item = ""
            else:
                item += ch
    for m in re.finditer(r"crate::([a-z_][a-z0-9_]*)", code):
        refs.add(m.group(1))
    return refs


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    problems = []
    graph: dict[str, set[str]] = {}
    witnesses: dict[tuple[str, str], str] = {}
    modules = {top_module(p) for p in SRC.rglob("*.rs")} - {None}
    for path in sorted(SRC.rglob("*.rs")):
        rel = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        n = text.count("\n")
        if n > MAX_LINES and rel not in SIZE_EXEMPT:
            problems.append(f"{rel}: {n} lines, over the limit of {MAX_LINES}; split it by concern")
        me = top_module(path)
        # Test modules kept in their own files (`#[cfg(test)] #[path] mod tests;`).
        if me is None or path.stem == "tests" or path.stem.endswith("_tests"):
            continue
        for dep in crate_refs(non_test_code(text)):
            if dep != me and dep in modules:
                graph.setdefault(me, set()).add(dep)
                witnesses.setdefault((me, dep), rel)
        graph.setdefault(me, set())
    for comp in find_cycles(graph):
        edges = [
            f"{a} -> {b} ({witnesses[(a, b)]})"
            for a in comp
            for b in sorted(graph[a])
            if b in comp
        ]
        problems.append("import cycle between top-level modules " + ", ".join(comp) + ":\n    " + "\n    ".join(edges))
    if "--graph" in sys.argv:
        for m in sorted(graph):
            print(f"{m} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
    for p in problems:
        print(f"check-shape: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
