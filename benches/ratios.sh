#!/bin/sh
# Prints the figures of the last `cargo bench --bench manager` run and their ratios: ours over the
# same group's baseline, and ours over the peer (twilio-common 0.1.7 on node 20, benches/peer).
# Reads criterion's estimates (the mean; the slope when criterion has one). Needs jq.
set -eu
dir="${CARGO_TARGET_DIR:-target}/criterion"
ns() {
    f="$dir/$1/new/estimates.json"
    [ -f "$f" ] || { echo "missing $f (run the bench first)" >&2; exit 1; }
    jq '(.slope // .mean).point_estimate' "$f"
}
row() { # name ours base peer
    awk -v n="$1" -v o="$2" -v b="$3" -v p="$4" 'BEGIN {
        u = (o >= 1000) ? 1000 : 1; s = (u == 1000) ? "us" : "ns";
        printf "| %-44s | %9.2f %s | %9.2f %s | %6.2fx |", n, o/u, s, b/u, s, o/b;
        if (p > 0) printf " %6.2fx |\n", o/p; else printf "      - |\n" }'
}
PEER_READ=7.99
PEER_UPDATE=5570
echo "| figure | ours | baseline | ours/baseline | ours/peer |"
echo "| --- | --- | --- | --- | --- |"
floor=$(ns "token_read/AccessToken__clone (floor)")
for b in "AccessManager__token" "ArcSwapOption__load_full" "RwLock__read_clone" "AccessManager__with_token(expires_at)"; do
    row "token_read/$b vs Arc clone" "$(ns "token_read/$b")" "$floor" "$PEER_READ"
done
row "token_read_without_drop/AccessManager__token vs Arc clone" \
    "$(ns "token_read_without_drop/AccessManager__token")" \
    "$(ns "token_read_without_drop/AccessToken__clone (floor)")" "$PEER_READ"
floor16=$(ns "token_read_16_managers_in_turn/AccessToken__clone (floor)")
for b in "AccessManager__token" "ArcSwapOption__load_full"; do
    row "token_read_16_managers_in_turn/$b vs Arc clone" "$(ns "token_read_16_managers_in_turn/$b")" "$floor16" 0
done
floor2=$(ns "token_read_2_threads/AccessToken__clone (floor)")
for b in "AccessManager__token" "ArcSwapOption__load_full" "RwLock__read_clone"; do
    row "token_read_2_threads/$b vs Arc clone" "$(ns "token_read_2_threads/$b")" "$floor2" 0
done
for n in 0 4 64; do
    row "update_token/$n consumers vs parse+watch+acks" \
        "$(ns "update_token/AccessManager__update_token/$n")" \
        "$(ns "update_token/parse+watch__send+acks (floor)/$n")" "$PEER_UPDATE"
done
row "update_token/0 consumers vs AccessToken::parse" \
    "$(ns "update_token/AccessManager__update_token/0")" "$(ns "update_token/AccessToken__parse")" 0
