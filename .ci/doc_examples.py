#!/usr/bin/env python3
"""Counts the public functions whose docs carry a runnable example, and prints the figure.

What it counts: every `pub fn` (also `pub async fn`, `pub const fn`, `pub unsafe fn`) under src/,
outside `#[cfg(test)]` modules, function bodies and `#[doc(hidden)]` items: inherent methods and free
functions. `pub(crate)`, `pub(super)` and `pub(in ..)` are not public. The crate warns on
`unreachable_pub` and CI denies warnings, so a plain `pub fn` in src/ is part of the public API.
Trait methods are not counted: a trait's docs carry a full example implementation instead.

What an example is: a fenced code block in the function's own `///` docs that rustdoc runs as a
test: Rust (no info string, `rust`, or only rustdoc's attributes) and neither `ignore` nor
`compile_fail`. A `no_run` block compiles but does not run; it counts, and is listed, because only
examples that need the network may be `no_run`.

It prints `doc examples: N of M public functions (P%)` (P rounded down), the same for the methods
of the types an app touches (APP_FACING below) and for the other functions, the examples that are
`no_run` or assert nothing, then every function still without one, app-facing types first.
With DOC_EXAMPLES_STRICT=1 (as .ci/run sets it) it exits 1 when an app-facing method lacks an
example or when fewer than nine public functions in ten have one; otherwise it only reports.

Usage: python3 .ci/doc_examples.py [SRC_DIR]   (default: the crate's src/)
"""

import os
import re
import sys

APP_FACING = [
    "AccessManager",
    "WeakAccessManager",
    "AccessManagerBuilder",
    "Events",
    "Event",
    "ManualClock",
    "SystemClock",
    "Backoff",
    "FetchLimiter",
    "FetchError",
    "ConsumerError",
    "AccessToken",
    "AccessTokenBuilder",
    "HttpFetcher",
    "HttpFetcherBuilder",
    "FileTokenStore",
    "Stats",
]
MIN_SHARE = (9, 10)  # at least nine public functions in ten

# Info-string words that keep a code block Rust (rustdoc's attributes); any other word makes it
# another language (`text`, `sh`, `toml`, ...), which rustdoc does not test.
RUSTDOC_ATTRS = {
    "rust", "ignore", "should_panic", "no_run", "compile_fail", "test_harness", "allow_fail",
    "standalone_crate",
}
NOT_RUN = {"ignore", "compile_fail"}


def blank_non_code(text):
    """The source with comments, strings and char literals replaced by spaces (newlines kept),
    so that braces and keywords left are code."""
    out = []
    i, n = 0, len(text)

    def blank(segment):
        out.append("".join(c if c == "\n" else " " for c in segment))

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(text[i:j])
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(text[i:j])
            i = j
        elif c in "rb" and re.match(r'(b?r)(#*)"', text[i:i + 260]) and (
            i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")
        ):
            m = re.match(r'(b?r)(#*)"', text[i:])
            end = text.find('"' + m.group(2), i + m.end())
            j = n if end < 0 else end + 1 + len(m.group(2))
            blank(text[i:j])
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(text[i:j + 1])
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{7f}', '{'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                blank(m.group(0))
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_generics(s):
    """`impl<T: A<B>> Foo<T>` without its angle-bracketed parts."""
    out, depth, prev = [], 0, ""
    for c in s:
        if c == "<":
            depth += 1
        elif c == ">" and prev != "-" and depth:
            depth -= 1
        elif not depth:
            out.append(c)
        prev = c
    return "".join(out)


def impl_self_type(header):
    """The type an `impl` block is for: `Foo` in `impl<T> Trait for a::Foo<T> where ..`."""
    h = strip_generics(header)
    h = re.split(r"\bwhere\b", h)[0]
    h = h[h.index("impl") + len("impl"):]
    if re.search(r"\bfor\b", h):
        h = re.split(r"\bfor\b", h)[-1]
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*", h)
    return words[-1].split("::")[-1] if words else "?"


def examples_in(doc_lines):
    """The code blocks rustdoc would test in these doc lines: (info words, body) each."""
    blocks, fence, info, body = [], None, None, []
    for line in doc_lines:
        stripped = line.strip()
        m = re.match(r"(`{3,}|~{3,})(.*)$", stripped)
        if fence is None and m:
            fence, body = m.group(1), []
            info = [w for w in re.split(r"[\s,]+", m.group(2).strip()) if w]
        elif fence is not None and stripped.startswith(fence) and not stripped[len(fence):].strip():
            blocks.append((info, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line)
    result = []
    for words, code in blocks:
        is_rust = all(w in RUSTDOC_ATTRS or w.startswith("edition") for w in words)
        if is_rust and not NOT_RUN & set(words):
            result.append(("no_run" in words, code))
    return result


def doc_lines(raw_header):
    """The `///` lines of an item's header text (its docs, attributes and signature)."""
    lines = []
    for line in raw_header.splitlines():
        s = line.strip()
        if s.startswith("///") and not s.startswith("////"):
            lines.append(s[3:][1:] if s[3:4] == " " else s[3:])
    return lines


PUB_FN = re.compile(r"(?:^|[\s\]])pub\s+(?:(?:const|async|unsafe|extern(?:\s+\"[^\"]*\")?)\s+)*fn\s+([A-Za-z_][A-Za-z0-9_]*)")


def scan_file(path, rel):
    """Every public function of a file: dicts with name, type (None for a free function), line,
    example (None, "run" or "no_run") and asserts (whether an example asserts something)."""
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    code = blank_non_code(raw)
    assert len(code) == len(raw)
    found = []
    # Scopes: ("test" | "fn" | "impl" | "other", self type or None).
    stack = []
    start = 0  # where the current item's header starts
    for pos, c in enumerate(code):
        if c not in "{};":
            continue
        header = code[start:pos]
        if c == "{" or c == ";":
            m = PUB_FN.search(header)
            in_body = any(kind in ("test", "fn") for kind, _ in stack)
            if m and not in_body and "doc(hidden)" not in header:
                impl = next((t for kind, t in reversed(stack) if kind == "impl"), None)
                docs = doc_lines(raw[start:pos])
                examples = examples_in(docs)
                example = None
                if examples:
                    example = "run" if any(not no_run for no_run, _ in examples) else "no_run"
                found.append({
                    "name": m.group(1),
                    "type": impl,
                    "file": rel,
                    "line": raw.count("\n", 0, start + m.start(1)) + 1,
                    "example": example,
                    "asserts": any(re.search(r"\bassert(_eq|_ne)?!", body) for _, body in examples),
                })
        if c == "{":
            if re.search(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", header) and re.search(r"\bmod\b", header):
                stack.append(("test", None))
            elif re.search(r"\bfn\b", header):
                stack.append(("fn", None))
            elif re.search(r"(^|[\s\]>])impl\b", header) and not re.search(r"[=(:,]\s*impl\b", header):
                stack.append(("impl", impl_self_type(header[re.search(r"(^|[\s\]>])impl\b", header).start():])))
            else:
                stack.append(("other", None))
        elif c == "}":
            if stack:
                stack.pop()
        start = pos + 1
    return found


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "src")
    functions = []
    for dirpath, _, files in sorted(os.walk(src)):
        for name in sorted(files):
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                functions += scan_file(path, os.path.relpath(path, root))
    if not functions:
        print(f"doc examples: no public function found under {src}", file=sys.stderr)
        return 2

    total = len(functions)
    with_example = [f for f in functions if f["example"]]
    share = 100 * len(with_example) // total  # rounded down: 89.9% is not 90%
    print(f"doc examples: {len(with_example)} of {total} public functions ({share}%)")

    def label(f):
        return f"{f['type']}::{f['name']}" if f["type"] else f["name"]

    app = [f for f in functions if f["type"] in APP_FACING]
    app_missing = [f for f in app if not f["example"]]
    print(f"  app-facing types: {len(app) - len(app_missing)} of {len(app)} methods")
    rest = [f for f in functions if f["type"] not in APP_FACING]
    rest_with = [f for f in rest if f["example"]]
    if rest:
        print(f"  elsewhere: {len(rest_with)} of {len(rest)} ({100 * len(rest_with) // len(rest)}%)")
    no_run = [f for f in with_example if f["example"] == "no_run"]
    if no_run:
        print(f"  no_run only ({len(no_run)}): " + ", ".join(label(f) for f in no_run))
    silent = [f for f in with_example if not f["asserts"]]
    if silent:
        print(f"  examples that assert nothing ({len(silent)}): " + ", ".join(label(f) for f in silent))
    if app_missing:
        print(f"missing on app-facing types ({len(app_missing)}):")
        for f in app_missing:
            print(f"  {label(f):<45} {f['file']}:{f['line']}")
    other_missing = [f for f in rest if not f["example"]]
    if other_missing:
        print(f"missing elsewhere ({len(other_missing)}):")
        for f in other_missing:
            print(f"  {label(f):<45} {f['file']}:{f['line']}")

    short = len(with_example) * MIN_SHARE[1] < total * MIN_SHARE[0]
    failures = []
    if app_missing:
        failures.append(f"{len(app_missing)} app-facing methods lack an example")
    if short:
        failures.append(f"under {100 * MIN_SHARE[0] // MIN_SHARE[1]}% of public functions have one")
    if not failures:
        return 0
    if os.environ.get("DOC_EXAMPLES_STRICT") == "1":
        print("doc examples: FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("doc examples: (not strict, set DOC_EXAMPLES_STRICT=1 to fail) " + "; ".join(failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
