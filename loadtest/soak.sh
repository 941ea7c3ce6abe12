#!/usr/bin/env bash
# Soak: does flujo's memory stay flat under a long run of batches once the dedup
# window is full? A benchmark, not a test: it reports, it does not judge.
#
# For each scenario it starts a release flujo on the embedded default (memory bus),
# sends batches of 1,000 sales at the highest rate it takes for SOAK_SECONDS
# (default 600), and every SOAK_EVERY seconds (default 10) samples the process RSS,
# Valkey's used_memory (valkey scenario), the events applied and the dedup window's
# gauges from /metrics. The dedup window is SOAK_WINDOW seconds (default 60), so it
# fills early and the rest of the run shows whether memory stays flat after it.
#
#   loadtest/soak.sh                         # memory and valkey, 10 minutes each
#   SOAK_SECONDS=120 SOAK_SCENARIOS=memory loadtest/soak.sh
#
# Writes loadtest/soak-<scenario>.csv (one row per sample) and loadtest/soak.md (the
# summary), and prints the summary. Valkey comes from scripts/services.sh (port 6380).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${SOAK_SECONDS:-600}
EVERY=${SOAK_EVERY:-10}
WINDOW=${SOAK_WINDOW:-60}
MAX_IDS=${SOAK_MAX_IDS:-}
SCENARIOS=${SOAK_SCENARIOS:-memory,valkey}
VALKEY_PORT=${SOAK_VALKEY_PORT:-6380}
OUT=${SOAK_OUT:-$ROOT/loadtest}
TMP=$(mktemp -d)
PIDS=()
# shellcheck source=loadtest/lib.sh
source "$ROOT/loadtest/lib.sh"
trap stop_all EXIT

say "building the release binary"
cargo build --release --quiet --bin flujo
FLUJO=$ROOT/target/release/flujo

metric() { # metric TEXT NAME LABEL: the sum of a metric's samples matching LABEL
    awk -v n="$2" -v l="$3" '$1 ~ "^"n"({|$)" && index($1, l) { s += $2 } END { printf "%.0f", s }' <<<"$1"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
valkey_used() {
    redis-cli -p "$VALKEY_PORT" info memory 2>/dev/null | tr -d '\r' |
        awk -F: '/^used_memory:/ { print $2 }'
}

summary=$TMP/summary.md
{
    echo "| scenario | events applied | events/s | RSS at 1/4 | RSS at 1/2 | RSS at end | peak RSS | RSS growth, 2nd half | Valkey used_memory: 1/2 → end | Valkey bytes/event while the window fills | window held at end |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
} >"$summary"

for scenario in ${SCENARIOS//,/ }; do
    store=memory
    prefix=soak-$(date +%s)-$$:
    if [ "$scenario" = valkey ]; then
        scripts/services.sh up >/dev/null
        store=redis://127.0.0.1:$VALKEY_PORT
    fi
    say "$scenario: flujo on the embedded default, store $store, window ${WINDOW}s, ${DURATION}s of batches of 1,000"
    env FLUJO__AGGREGATOR__DEDUP_WINDOW_SECS="$WINDOW" FLUJO__VALKEY__PREFIX="$prefix" \
        ${MAX_IDS:+FLUJO__AGGREGATOR__DEDUP_MAX_IDS=$MAX_IDS} \
        "$FLUJO" run --http 127.0.0.1:0 --grpc 127.0.0.1:0 --tcp 127.0.0.1:0 --store "$store" \
        >"$TMP/$scenario.out" 2>"$TMP/$scenario.err" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 300); do grep -q listening "$TMP/$scenario.out" 2>/dev/null && break; sleep 0.1; done
    http=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$TMP/$scenario.out" | head -n 1)
    [ -n "$http" ] || { cat "$TMP/$scenario.err" >&2; exit 1; }
    base_valkey=$(valkey_used || echo 0)
    "$FLUJO" loadgen --target "http://$http" --kind sales --rate max --batch 1000 \
        --concurrency 8 --duration "$DURATION" --json >"$TMP/$scenario.load.json" 2>/dev/null &
    load=$!
    PIDS+=("$load")
    csv=$OUT/soak-$scenario.csv
    echo "seconds,rss_kib,valkey_used_bytes,events_applied,dedup_ids,dedup_window_seconds,dedup_evicted" >"$csv"
    start=$(date +%s)
    while kill -0 "$load" 2>/dev/null; do
        sleep "$EVERY"
        text=$(curl -s "http://$http/metrics" || true)
        used=0
        [ "$scenario" = valkey ] && used=$(( $(valkey_used || echo 0) - base_valkey ))
        printf '%s,%s,%s,%s,%s,%s,%s\n' "$(( $(date +%s) - start ))" "$(rss_kib "$pid")" "$used" \
            "$(metric "$text" flujo_events_applied_total kind=\"sale\")" \
            "$(metric "$text" flujo_dedup_ids kind=\"sale\")" \
            "$(metric "$text" flujo_dedup_window_seconds kind=\"sale\")" \
            "$(metric "$text" flujo_dedup_evicted_total kind=\"sale\")" >>"$csv"
    done
    wait "$load" || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$scenario" = valkey ]; then
        redis-cli -p "$VALKEY_PORT" --scan --pattern "$prefix*" |
            xargs -r -d '\n' -n 500 redis-cli -p "$VALKEY_PORT" unlink >/dev/null 2>&1 || true
    fi
    python3 - "$csv" "$scenario" "$WINDOW" >>"$summary" <<'EOF'
import csv, sys
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(sys.argv[1]))]
scenario, window = sys.argv[2], float(sys.argv[3])
if not rows:
    print(f"| {scenario} | no samples |"); sys.exit()
at = lambda f: rows[min(len(rows) - 1, int(len(rows) * f))]
mib = lambda kib: f"{kib / 1024:.0f} MiB"
half, end = at(0.5), rows[-1]
growth = (end["rss_kib"] - half["rss_kib"]) / 1024
# While the window fills: before the cap first forgot ids, within the window.
fill = [r for r in rows
        if r["seconds"] <= window and r["dedup_evicted"] == 0 and r["events_applied"] > 0]
per_event = "n/a"
if scenario == "valkey" and fill:
    r = fill[-1]
    per_event = f"{r['valkey_used_bytes'] / r['events_applied']:.1f}"
valkey = "n/a" if scenario != "valkey" else \
    f"{half['valkey_used_bytes'] / 2**20:.0f} → {end['valkey_used_bytes'] / 2**20:.0f} MiB"
rate = end["events_applied"] / max(end["seconds"], 1)
print(f"| {scenario} | {end['events_applied']:.0f} | {rate:.0f} | {mib(at(0.25)['rss_kib'])} | "
      f"{mib(half['rss_kib'])} | {mib(end['rss_kib'])} | {mib(max(r['rss_kib'] for r in rows))} | "
      f"{growth:+.0f} MiB | {valkey} | {per_event} | {end['dedup_window_seconds']:.0f} s |")
EOF
done

{
    echo "# Soak: memory once the dedup window is full"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores; ${DURATION}s per scenario, dedup window ${WINDOW}s, batches of 1,000 sales at the highest rate flujo takes (loadgen --rate max, 8 in flight); samples every ${EVERY}s in soak-<scenario>.csv."
    echo
    cat "$summary"
} >"$OUT/soak.md"
cat "$OUT/soak.md"
