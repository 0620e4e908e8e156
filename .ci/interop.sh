#!/usr/bin/env bash
# Interoperability with the official Twilio helper libraries (see ../shared/tokenkit/README.md):
# tokens minted by this crate must pass twilio-node's and twilio-python's verifiers, carry the same
# header and claims as twilio-node mints for the same inputs, and twilio-node's tokens must pass our
# `verify`. Needs node, npm, python3 and the npm and PyPI registries.
# INTEROP_TOOLKIT=DIR reuses a folder already set up as below (for local runs); CI leaves it unset.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=../shared/tokenkit
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

TK=${INTEROP_TOOLKIT:-}
if [[ -z "$TK" ]]; then
  TK="$WORK/toolkit"
  mkdir -p "$TK"
  echo "interop: installing twilio-node 6.3.1 and twilio-python 9.13.0 in $TK"
  (cd "$TK" && npm install --no-audit --no-fund --loglevel=error twilio@6.3.1 >/dev/null)
  python3 -m venv "$TK/venv"
  "$TK/venv/bin/pip" install -q --disable-pip-version-check twilio==9.13.0 PyJWT==2.15.1
fi

cargo run --quiet --example mint_interop -- mint "$WORK/ours.json"
NODE_PATH="$TK/node_modules" node "$SHARED/check_node.js" "$WORK/ours.json" "$WORK/node_result.json"
"$TK/venv/bin/python" "$SHARED/check_python.py" "$WORK/ours.json" "$WORK/python_result.json"
NODE_PATH="$TK/node_modules" node .ci/interop/mint_reference.js "$WORK/ours.json" "$WORK/reference.json"
cargo run --quiet --example mint_interop -- verify "$WORK/reference.json"
node .ci/interop/compare.js "$WORK/ours.json" "$WORK/reference.json" \
  "$WORK/node_result.json" "$WORK/python_result.json"
