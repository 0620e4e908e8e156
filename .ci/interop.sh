#!/usr/bin/env bash
# Interoperability with the official Twilio helper libraries (see ../shared/tokenkit/README.md):
# tokens minted by this crate must pass twilio-node's and twilio-python's verifiers, carry the same
# header and claims as twilio-node mints for the same inputs, and twilio-node's tokens must pass our
# `verify`. Needs node, npm, python3 and the npm and PyPI registries.
# `interop.sh --install DIR` only sets up DIR with the two libraries (CI does that while the crate
# compiles); INTEROP_TOOLKIT=DIR then reuses it. Without either, the toolkit goes in a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=../shared/tokenkit

install_toolkit() {
  mkdir -p "$1"
  echo "interop: installing twilio-node 6.3.1 and twilio-python 9.13.0 in $1"
  (cd "$1" && npm install --no-audit --no-fund --loglevel=error twilio@6.3.1 >/dev/null)
  python3 -m venv "$1/venv"
  "$1/venv/bin/pip" install -q --disable-pip-version-check twilio==9.13.0 PyJWT==2.15.1
}

if [[ "${1:-}" == "--install" ]]; then
  install_toolkit "$2"
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TK=${INTEROP_TOOLKIT:-}
if [[ -z "$TK" ]]; then
  TK="$WORK/toolkit"
  install_toolkit "$TK"
fi

cargo run --quiet --example mint_interop -- mint "$WORK/ours.json"
NODE_PATH="$TK/node_modules" node "$SHARED/check_node.js" "$WORK/ours.json" "$WORK/node_result.json"
"$TK/venv/bin/python" "$SHARED/check_python.py" "$WORK/ours.json" "$WORK/python_result.json"
NODE_PATH="$TK/node_modules" node .ci/interop/mint_reference.js "$WORK/ours.json" "$WORK/reference.json"
cargo run --quiet --example mint_interop -- verify "$WORK/reference.json"
node .ci/interop/compare.js "$WORK/ours.json" "$WORK/reference.json" \
  "$WORK/node_result.json" "$WORK/python_result.json"
