#!/usr/bin/env bash
# Installs what flujo's tests need (from the package registries) and runs every
# check and test: formatting, clippy, unit and integration tests over real sockets.
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
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

say "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

say "tests"
cargo nextest run --workspace --no-fail-fast
# nextest does not run doctests
cargo test --workspace --doc
