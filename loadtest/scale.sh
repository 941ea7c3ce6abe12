#!/usr/bin/env bash
# Throughput against the number of consumer processes. For each count k (default
# 1, 2, 3 and 6): a fresh private tansu, topics of 6 partitions, a backlog of sales
# and tweets sent through receiver → router with no consumer running; then k
# consumer processes start at once (`kafka.assignment` `i/k`, one group) and share
# the backlog into a three-master Valkey Cluster (scripts/services.sh cluster); the
# figure is the backlog divided by the time until their `flujo_events_applied_total`
# sum to it, and every consumer must answer the same sales count. Writes
# loadtest/scale.csv and loadtest/scale.png (matplotlib, installed into the
# services' venv, .services/venv, when missing) and prints the table.
#
# Then the queries: for each shard count (default 12 and 48), one all-in-one
# flujo on the same cluster with `valkey.shards` set, a load of sales and tweets,
# and wrk (2 threads, 8 connections, 10 s, `Cache-Control: no-cache` so every
# request reads every shard) on /v1/kpis/sales and /v1/rankings/products: their
# p50/p99 go to loadtest/scale-queries.csv.
#
#   loadtest/scale.sh
#   SCALE_CONSUMERS="1 2" SCALE_EVENTS_PER_S=10000 loadtest/scale.sh
#   SCALE_STORE=valkey://127.0.0.1:6380 loadtest/scale.sh   # a standalone Valkey
#   BENCH_KAFKA=broker:9092 loadtest/scale.sh                # an existing Kafka instead of tansu
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

COUNTS=${SCALE_CONSUMERS:-1 2 3 6}
QUERY_SHARDS=${SCALE_QUERY_SHARDS:-12 48}
RATE=${SCALE_EVENTS_PER_S:-20000}
LOAD_SECONDS=${SCALE_LOAD_SECONDS:-8}
PARTITIONS=6
KAFKA=${BENCH_KAFKA:-127.0.0.1:9092}
STORE=${SCALE_STORE:-valkey+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003}
CSV=$ROOT/loadtest/scale.csv
PNG=$ROOT/loadtest/scale.png
RUN_ID=scale-$(date +%s)-$$
TMP=$(mktemp -d)
PIDS=()
# shellcheck source=loadtest/lib.sh
source "$ROOT/loadtest/lib.sh"

trap stop_all EXIT

say "building the release binaries"
cargo build --release --quiet --bin flujo --example kafka_producer_baseline
FLUJO=$ROOT/target/release/flujo
BASELINE=$ROOT/target/release/examples/kafka_producer_baseline
say "services, with the Valkey Cluster (scripts/services.sh cluster)"
scripts/services.sh cluster >&2
SERVICES=${FLUJO_SERVICES_DIR:-$ROOT/.services}
PYTHON=$SERVICES/venv/bin/python

applied() { # applied URL: the process's flujo_events_applied_total, summed
    curl -s "$1/metrics" | awk '/^flujo_events_applied_total/ {s += $2} END {printf "%d", s}'
}
cpu_seconds() { # cpu_seconds PID: user + system CPU time the process used so far
    python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"
}
# store_script_us [reset]: the store's script time (EVALSHA + EVAL, µs) summed over
# its nodes, from INFO commandstats; with `reset`, zeroes the counters first.
store_script_us() {
    "$PYTHON" - "$STORE" "${1:-}" <<'PY'
import sys, valkey
url, reset = sys.argv[1], sys.argv[2] == "reset"
hosts = url.split("://", 1)[1].rsplit("@", 1)[-1].split(",")
total = 0
for host in hosts:
    h, p = host.split("/")[0].rsplit(":", 1)
    c = valkey.Valkey(host=h, port=int(p))
    if reset:
        c.config_resetstat()
        continue
    stats = c.info("commandstats")
    total += sum(stats.get(k, {}).get("usec", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))
print(total)
PY
}

echo "consumers,events,seconds,events_per_s,consumer_cpu_us_per_event,store_script_us_per_event,receiver_cpu_us_per_event,router_cpu_us_per_event,applied_per_consumer" >"$CSV"
for k in $COUNTS; do
    tansu_fresh
    tag=$RUN_ID-$k
    ENVS=(
        FLUJO__KAFKA__SALES_TOPIC="$tag-sales" FLUJO__KAFKA__TWEETS_TOPIC="$tag-tweets"
        FLUJO__KAFKA__GROUP_ID="$tag" FLUJO__KAFKA__PARTITIONS=$PARTITIONS
        FLUJO__VALKEY__PREFIX="$tag:"
    )
    LISTEN=(--http 127.0.0.1:0 --grpc 127.0.0.1:0 --tcp 127.0.0.1:0 --log-level warn)
    start "router-$k" env "${ENVS[@]}" "$FLUJO" run --role router --bus kafka --kafka "$KAFKA" "${LISTEN[@]}"
    router_pid=$PID
    router_grpc=$(addr grpc "$LINE")
    wait_ready "http://$(addr http "$LINE")" router
    start "receiver-$k" env "${ENVS[@]}" "$FLUJO" run --role receiver \
        --router-url "grpc://$router_grpc" "${LISTEN[@]}"
    receiver_pid=$PID
    receiver=$(addr http "$LINE")
    wait_ready "http://$receiver" receiver
    say "$k consumer(s): a backlog at $RATE events/s for $LOAD_SECONDS s"
    "$FLUJO" loadgen --target "http://$receiver" --json --kind mixed --rate "$RATE" \
        --duration "$LOAD_SECONDS" --batch 100 --concurrency 16 >"$TMP/load-$k.json" 2>"$TMP/load-$k.err"
    events=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"])' "$TMP/load-$k.json")
    # CPU per event of the ingest roles (start-up included; the load is all they did).
    receiver_us=$(python3 -c "print(f'{$(cpu_seconds "$receiver_pid") * 1e6 / max($events, 1):.2f}')")
    router_us=$(python3 -c "print(f'{$(cpu_seconds "$router_pid") * 1e6 / max($events, 1):.2f}')")
    stop "$receiver_pid"
    stop "$router_pid"

    store_script_us reset >/dev/null
    t0=$(date +%s.%N)
    consumers=()
    consumer_pids=()
    for ((i = 0; i < k; i++)); do
        start "consumer-$k-$i" env "${ENVS[@]}" FLUJO__KAFKA__ASSIGNMENT="$i/$k" "$FLUJO" run \
            --role consumer --bus kafka --kafka "$KAFKA" --store "$STORE" "${LISTEN[@]}"
        consumer_pids+=("$PID")
        consumers+=("http://$(addr http "$LINE")")
    done
    total=0
    for ((n = 0; n < 3000; n++)); do
        total=0
        for url in "${consumers[@]}"; do total=$((total + $(applied "$url"))); done
        [ "$total" -ge "$events" ] && break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    per=()
    for url in "${consumers[@]}"; do per+=("$(applied "$url")"); done
    # Every consumer answers the merged KPIs: the same counts.
    counts=$(for url in "${consumers[@]}"; do
        curl -s -H 'Cache-Control: no-cache' "$url/v1/kpis/sales" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["count"])'
    done | sort -u | wc -l)
    [ "$counts" = 1 ] || say "the consumers answer different sales counts"
    cpu=0
    for pid in "${consumer_pids[@]}"; do cpu=$(python3 -c "print($cpu + $(cpu_seconds "$pid"))"); done
    script_us=$(store_script_us)
    for pid in "${consumer_pids[@]}"; do stop "$pid"; done
    if [ "$total" -lt "$events" ]; then
        say "$k consumer(s): only $total of $events applied in 300 s"
        rate=FAILED
    else
        rate=$(python3 -c "print(round($events / ($t1 - $t0)))")
    fi
    seconds=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
    cpu_us=$(python3 -c "print(f'{$cpu * 1e6 / max($events, 1):.2f}')")
    store_us=$(python3 -c "print(f'{$script_us / max($events, 1):.2f}')")
    say "$k consumer(s): $events events in $seconds s = $rate events/s; flujo $cpu_us µs CPU and" \
        "the store $store_us µs of script per event (per consumer: ${per[*]})"
    echo "$k,$events,$seconds,$rate,$cpu_us,$store_us,$receiver_us,$router_us,${per[*]}" >>"$CSV"
done
# The broker's own ceiling: a bare rdkafka reader of a backlog of the same size
# on a fresh tansu (no store), what no number of consumers can beat here.
tansu_fresh
"$BASELINE" --brokers "$KAFKA" --topic "$RUN_ID-bare" --messages "$events" --consume true \
    >"$TMP/bare.txt" 2>"$TMP/bare.err" || say "the bare reader failed: $(tail -3 "$TMP/bare.err")"
bare=$(sed -n 's/.* consume_msgs_per_s=\([0-9.]*\).*/\1/p' "$TMP/bare.txt")
say "a bare reader of the same broker: ${bare:-?} msgs/s"
echo "${bare:-}" >"$TMP/bare-rate"
[ -z "$TANSU_PID" ] || stop "$TANSU_PID"

QCSV=$ROOT/loadtest/scale-queries.csv
echo "shards,query,requests_per_s,p50_ms,p99_ms" >"$QCSV"
if have wrk; then
    for shards in $QUERY_SHARDS; do
        start "query-$shards" env FLUJO__VALKEY__PREFIX="$RUN_ID-q$shards:" FLUJO__VALKEY__SHARDS="$shards" \
            "$FLUJO" run --store "$STORE" --http 127.0.0.1:0 --grpc 127.0.0.1:0 --tcp 127.0.0.1:0 --log-level warn
        qpid=$PID
        qhttp=$(addr http "$LINE")
        wait_ready "http://$qhttp" "flujo ($shards shards)"
        "$FLUJO" loadgen --target "http://$qhttp" --kind mixed --rate max --duration 5 --batch 1000 \
            --concurrency 4 --verify --timeout 120 >"$TMP/qload-$shards.txt" 2>&1 ||
            say "the load before the queries failed: $(tail -3 "$TMP/qload-$shards.txt")"
        for query in "/v1/kpis/sales" "/v1/rankings/products?limit=10"; do
            wrk -t2 -c8 -d10s --latency -H 'Cache-Control: no-cache' "http://$qhttp$query" >"$TMP/wrk.txt" 2>&1
            rps=$(awk '/^Requests\/sec:/ {printf "%d", $2}' "$TMP/wrk.txt")
            p50=$(awk '$1 == "50%" {print $2}' "$TMP/wrk.txt")
            p99=$(awk '$1 == "99%" {print $2}' "$TMP/wrk.txt")
            say "$shards shards, $query: $rps requests/s, p50 $p50, p99 $p99"
            echo "$shards,$query,$rps,$p50,$p99" >>"$QCSV"
        done
        stop "$qpid"
    done
else
    say "wrk is not installed (apt-get install wrk): no query latencies"
fi

"$PYTHON" -c 'import matplotlib' 2>/dev/null || "$SERVICES/venv/bin/pip" install -q matplotlib >&2
"$PYTHON" - "$CSV" "$PNG" "$STORE" "$(cat "$TMP/bare-rate")" <<'PY'
import csv, os, subprocess, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

csv_path, png_path, store, bare = sys.argv[1:5]
rows = [r for r in csv.DictReader(open(csv_path)) if r["events_per_s"] != "FAILED"]
k = [int(r["consumers"]) for r in rows]
rate = [float(r["events_per_s"]) for r in rows]
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
fig, ax = plt.subplots(figsize=(7, 4.2))
ax.plot(k, rate, marker="o", label="flujo consumers (measured)")
if rate:
    ax.plot(k, [rate[0] * n for n in k], linestyle="--", color="grey", label="linear from one consumer")
if bare:
    ax.axhline(float(bare), color="firebrick", linestyle=":",
               label=f"bare rdkafka reader of the same broker, no store ({float(bare):,.0f}/s)")
ax.set_xlabel("consumer processes (6 partitions, kafka.assignment i/k)")
ax.set_ylabel("backlog applied, events/s")
ax.set_title(f"Kafka backlog into {'a Valkey Cluster' if 'cluster' in store else 'Valkey'}, "
             f"{os.cpu_count()} CPUs shared (commit {rev})", fontsize=10)
ax.set_xticks(k)
ax.set_ylim(bottom=0)
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(png_path, dpi=110)
print(open(csv_path).read())
print(f"bare reader of the same broker: {bare} msgs/s")
print(f"chart: {png_path}")
PY
cat "$QCSV"
