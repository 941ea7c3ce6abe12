#!/usr/bin/env bash
# A short fuzzing smoke run (README "Fuzzing"): builds the cargo-fuzz targets in
# fuzz/ with nightly and runs each for FUZZ_SECONDS (default 15) from the committed
# seed corpus, one job at a time. Exits nonzero on a crash, a panic, a leak or a
# timeout; the failing input is kept in fuzz/artifacts/<target>/.
# Called from scripts/test.sh; skipped (with a message) only without a nightly
# toolchain, which cargo fuzz needs for its sanitizer and coverage flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-15}
# The smoke run builds without a sanitizer: an ASan build of the crate's
# dependencies takes several minutes cold on a small machine, and these targets hold
# no unsafe code of their own, so ASan finds nothing that debug assertions and
# panics do not (the long runs in the README use the default, ASan).
sanitizer=${FUZZ_SANITIZER:-none}
# Its own target dir, so the smoke build and a long ASan run do not rebuild each other.
target_dir=target/sanitizer-$sanitizer
targets=(http_body tcp_lines grpc_batch apply)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz smoke: SKIPPED, no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi


started=$SECONDS
cargo +nightly fuzz build --sanitizer "$sanitizer" --target-dir "$target_dir"
echo "fuzz smoke: built in $((SECONDS - started)) s"
for target in "${targets[@]}"; do
    scratch=$(mktemp -d)
    # The JSON targets get the dictionary of field names, aliases and enum names.
    dict=()
    case "$target" in http_body | tcp_lines) dict=(-dict=dicts/json.dict) ;; esac
    echo "fuzz smoke: $target for ${seconds} s"
    # The scratch dir comes first: new inputs go there, the seeds stay as committed.
    # One process (libFuzzer's default without -jobs), one target at a time.
    if ! cargo +nightly fuzz run --sanitizer "$sanitizer" --target-dir "$target_dir" "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        "${dict[@]}" 2>"$scratch.log"; then
        tail -n 60 "$scratch.log" >&2
        echo "fuzz smoke: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
        rm -rf "$scratch" "$scratch.log"
        exit 1
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+[[:space:]]+DONE' "$scratch.log" || true
    rm -rf "$scratch" "$scratch.log"
done
echo "fuzz smoke: every target ran clean, $((SECONDS - started)) s in all"
