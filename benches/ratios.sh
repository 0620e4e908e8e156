#!/bin/sh
# Prints the figures of the last `cargo bench --bench manager` run as markdown tables, each figure
# beside the floors measured in the same run, and over the peer (twilio-common 0.1.7 on node 20,
# benches/peer) where a goal is set. Criterion's estimate is its slope (its mean when it has none).
# The peer's figures come from benches/peer/peer_results.json (written by its last run), else from
# benches/peer/README.md. The memory figure is printed by `cargo bench --bench memory`. Needs jq.
set -eu
here=$(dirname "$0")
dir="${CARGO_TARGET_DIR:-$here/../target}/criterion"
peer_json="$here/peer/peer_results.json"
if [ -f "$peer_json" ]; then
    PEER_READ=$(jq .token_read_ns "$peer_json")
    PEER_UPDATE=$(jq .update_token_ns "$peer_json")
    echo "peer: $peer_json (written $(date -r "$peer_json" '+%Y-%m-%d %H:%M'))"
else
    PEER_READ=7.99
    PEER_UPDATE=5570
    echo "peer: benches/peer/README.md (no peer_results.json: run the peer for same-session figures)"
fi
echo

ns() {
    f="$dir/$1/new/estimates.json"
    [ -f "$f" ] || { echo "missing $f (run the bench first)" >&2; exit 1; }
    jq '(.slope // .mean).point_estimate' "$f"
}

# t NS: a time for people.
t() { awk -v x="$1" 'BEGIN { if (x >= 1000) printf "%.2f µs", x / 1000; else printf "%.1f ns", x }'; }
# ratio A B [GOAL]: A/B, and whether it is within GOAL.
ratio() {
    awk -v a="$1" -v b="$2" -v g="${3:-0}" 'BEGIN {
        r = a / b
        if (g > 0) printf "%.2f× | ≤ %.2f× | %s", r, g, (r <= g) ? "yes" : "**no**"
        else printf "%.2f× | | ", r
    }'
}

echo "Reads against their floors (same group, same run):"
echo
echo "| figure | ours | floor | ours/floor | goal | met | peer | ours/peer |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
g=token_read
ours=$(ns "$g/AccessManager__token")
floor=$(ns "$g/ArcSwapOption__load_full")
echo "| \`token()\` | $(t "$ours") | arc-swap load + \`Arc\` clone $(t "$floor") | $(ratio "$ours" "$floor" 1.1) | $(t "$PEER_READ") | $(ratio "$ours" "$PEER_READ" | cut -d'|' -f1) |"
ours=$(ns "$g/AccessManager__with_token(expires_at)")
floor=$(ns "$g/ArcSwapOption__load(expires_at)")
echo "| \`with_token(expires_at)\` | $(t "$ours") | arc-swap load $(t "$floor") | $(ratio "$ours" "$floor" 1.1) | $(t "$PEER_READ") | $(ratio "$ours" "$PEER_READ" | cut -d'|' -f1) |"
shaped=$(ns "$g/ArcSwapOption__load(expires_at), manager-shaped")
echo "| \`with_token(expires_at)\` | $(t "$ours") | the same load, manager-shaped $(t "$shaped") | $(ratio "$ours" "$shaped" 1.1) | | |"
clone=$(ns "$g/AccessToken__clone (floor)")
echo "| \`AccessToken::clone\` (reference) | $(t "$clone") | | | | | | |"
g=token_read_2_threads
for read in AccessManager__token 'AccessManager__with_token(expires_at)' ArcSwapOption__load_full; do
    echo "| $read, 2 threads | $(t "$(ns "$g/$read")") | \`Arc\` clone, 2 threads $(t "$(ns "$g/AccessToken__clone (floor)")") | | | | | |"
done
echo

g=update_token_from_task
parse=$(ns "$g/AccessToken__parse")
trip=$(ns "$g/oneshot round trip")
wake=$(ns "$g/task wake")
call=$(ns "$g/consumer call")
echo "Floors of an update from a task (same group, same run): parse $(t "$parse"), oneshot round trip $(t "$trip"), task wake $(t "$wake"), one consumer call $(t "$call")."
echo
echo "| \`update_token\` from a task | ours | floors (parse + round trip + n × consumer call) | ours/floors | parse+watch+acks | peer | ours/peer | goal | met |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for n in 0 4 64; do
    ours=$(ns "$g/AccessManager__update_token/$n")
    floors=$(awk -v p="$parse" -v r="$trip" -v c="$call" -v n="$n" 'BEGIN { print p + r + n * c }')
    base=$(ns "$g/parse+watch+acks (baseline)/$n")
    case $n in 0) goal=0.35 ;; 4) goal=0.6 ;; *) goal=0 ;; esac
    echo "| $n consumers | $(t "$ours") | $(t "$floors") | $(ratio "$ours" "$floors" | cut -d'|' -f1) | $(t "$base") | $(t "$PEER_UPDATE") | $(ratio "$ours" "$PEER_UPDATE" "$goal") |"
done
echo "| \`AccessToken::parse\` alone | $(t "$parse") | | | | $(t "$PEER_UPDATE") | $(ratio "$parse" "$PEER_UPDATE") |"
echo

echo "From \`block_on\` (no goal):"
echo
echo "| \`update_token\` | ours | parse+watch+acks | ours/baseline | ours/peer |"
echo "| --- | --- | --- | --- | --- |"
for caller in block_on_current_thread block_on_multi_thread; do
    g=update_token_$caller
    for n in 0 4 64; do
        ours=$(ns "$g/AccessManager__update_token/$n")
        base=$(ns "$g/parse+watch+acks (baseline)/$n")
        echo "| $caller, $n consumers | $(t "$ours") | $(t "$base") | $(ratio "$ours" "$base" | cut -d'|' -f1) | $(ratio "$ours" "$PEER_UPDATE" | cut -d'|' -f1) |"
    done
done
