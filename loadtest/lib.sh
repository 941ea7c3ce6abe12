# Helpers shared by loadtest/bench.sh and loadtest/scale.sh (sourced, not run).
# They use the caller's TMP (a scratch directory), PIDS (background processes to
# stop on exit), ROOT (the repository) and, for tansu_fresh, BENCH_KAFKA and KAFKA.

say() { printf '==> %s\n' "$*" >&2; }
# stop_all: stops every process in PIDS and removes TMP (an EXIT trap).
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
have() { command -v "$1" >/dev/null 2>&1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start NAME CMD... : runs a server in the background and waits for its
# "listening http=…" line; sets LINE to that line and PID to the process id.
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PID=$!
    PIDS+=("$PID")
    local i
    for ((i = 0; i < 300; i++)); do
        if grep -q 'listening' "$TMP/$name.out" 2>/dev/null; then
            LINE=$(grep -m1 'listening' "$TMP/$name.out")
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    say "$name did not start:"
    tail -20 "$TMP/$name.err" >&2
    exit 1
}
stop() { # stop PID: SIGTERM, wait for the drain
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
addr() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
wait_ready() { # wait_ready URL NAME
    local i
    for ((i = 0; i < 600; i++)); do
        curl -sf -o /dev/null "$1/readyz" && return 0
        sleep 0.1
    done
    say "$2 never ready: $(curl -s "$1/readyz")"
    exit 1
}

# A private Kafka-compatible broker (tansu, as scripts/services.sh installs it) with
# fresh storage, so a scenario neither depends on nor disturbs the shared one; used
# unless BENCH_KAFKA names a broker.
TANSU_PID=
tansu_fresh() {
    [ -n "${BENCH_KAFKA:-}" ] && return 0
    [ -z "$TANSU_PID" ] || stop "$TANSU_PID"
    local bin port dir
    bin=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
    [ -x "$bin" ] || { say "no tansu binary: run scripts/services.sh up once, or set BENCH_KAFKA"; exit 1; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    dir=$TMP/tansu-$port
    mkdir -p "$dir"
    (cd "$dir" && exec "$bin" broker --storage-engine sqlite://tansu.db \
        --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        >"$dir.log" 2>&1) &
    TANSU_PID=$!
    PIDS+=("$TANSU_PID")
    local i
    for ((i = 0; i < 100; i++)); do port_open "$port" && break; sleep 0.1; done
    # As scripts/services.sh does: without it tansu reads slow down as topics grow.
    python3 "$ROOT/scripts/tansu-index.py" "$dir/tansu.db" || say "could not index tansu's header table"
    KAFKA=127.0.0.1:$port
}

