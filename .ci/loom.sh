#!/usr/bin/env bash
# The loom models of the mailbox (TESTING.md, "Model checking"). `--cfg loom` goes to this crate
# alone (`cargo rustc`), so the dependencies already built for `cargo test --all-features` are
# reused: the models build in seconds. Arguments go to the test binary (a model's name, --nocapture).
set -euo pipefail
cd "$(dirname "$0")/.."
models=$(cargo rustc --quiet --all-features --lib --profile test --message-format=json-render-diagnostics \
  -- --cfg loom |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
"$models" loom "$@"
