#!/bin/sh
# Prints the figures of the last `cargo bench --bench manager` run as a markdown table: ours, the
# same group's baseline, ours/baseline, the peer (twilio-common 0.1.7 on node 20, benches/peer),
# ours/peer, and the goal. Criterion's estimate is its slope (its mean when it has none). The peer's
# figures come from benches/peer/peer_results.json (written by its last run), else from
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

# row FIGURE OURS_NS BASELINE_NAME BASELINE_NS PEER_NS GOAL_OVER_PEER (0: no peer, no goal)
row() {
    awk -v n="$1" -v o="$2" -v bn="$3" -v b="$4" -v p="$5" -v g="$6" '
    function t(x) { return x >= 1000 ? sprintf("%.2f µs", x / 1000) : sprintf("%.1f ns", x) }
    BEGIN {
        base = (b > 0) ? sprintf("%s %s | %.2f×", bn, t(b), o / b) : "| "
        peer = (p > 0) ? sprintf("%s | %.2f×", t(p), o / p) : "| "
        goal = (g > 0) ? sprintf("≤ %.1f× | %s", g, (o / p <= g) ? "yes" : "**no**") : "| "
        printf "| %s | %s | %s | %s | %s |\n", n, t(o), base, peer, goal
    }'
}

echo "| figure | ours | baseline (same group) | ours/baseline | peer | ours/peer | goal (over peer) | met |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
g=token_read
floor=$(ns "$g/AccessToken__clone (floor)")
row '`token()`' "$(ns "$g/AccessManager__token")" 'Arc clone' "$floor" "$PEER_READ" 2.0
row '`with_token(expires_at)`' "$(ns "$g/AccessManager__with_token(expires_at)")" 'Arc clone' "$floor" "$PEER_READ" 1.0
row '`ArcSwapOption::load_full`' "$(ns "$g/ArcSwapOption__load_full")" 'Arc clone' "$floor" 0 0
g=token_read_2_threads
floor=$(ns "$g/AccessToken__clone (floor)")
row '`token()`, 2 threads' "$(ns "$g/AccessManager__token")" 'Arc clone' "$floor" 0 0
row '`with_token`, 2 threads' "$(ns "$g/AccessManager__with_token(expires_at)")" 'Arc clone' "$floor" 0 0
row '`ArcSwapOption::load_full`, 2 threads' "$(ns "$g/ArcSwapOption__load_full")" 'Arc clone' "$floor" 0 0
for caller in from_task block_on_current_thread block_on_multi_thread; do
    g=update_token_$caller
    for n in 0 4 64; do
        goal=0
        if [ "$caller" = from_task ]; then
            case $n in 0) goal=0.3 ;; 4) goal=0.5 ;; esac
        fi
        case $caller in
            from_task) how='from a task' ;;
            block_on_current_thread) how='`block_on`, current-thread' ;;
            block_on_multi_thread) how='`block_on`, multi-thread' ;;
        esac
        row "\`update_token\` $how, $n consumers" \
            "$(ns "$g/AccessManager__update_token/$n")" \
            'parse+watch+acks' "$(ns "$g/parse+watch+acks (baseline)/$n")" "$PEER_UPDATE" "$goal"
    done
done
row '`AccessToken::parse` (reference)' "$(ns update_token_from_task/AccessToken__parse)" '' 0 "$PEER_UPDATE" 0
