#!/usr/bin/env bash
# Makes the development secrets that git ignores, so that a fresh clone renders
# (`kubectl kustomize manifests/overlays/dev`) and runs locally (`docker compose up`):
#
#   1. every manifests/**/secrets/NAME.env from the committed NAME.env.example beside
#      it, each `change-me` replaced by its own random password;
#   2. .env at the repository root, which Docker Compose reads for compose.yaml's
#      ${VARIABLES}: the same users and passwords as manifests/base/secrets/*.env.
#
#   scripts/dev-secrets.sh
#
# Idempotent: a file that exists is kept as it is, never overwritten (delete it to
# make a new one). Passwords are 48 hex digits from /dev/urandom: URL-safe, since
# they go into flujo's amqp:// and valkey:// URLs. Files are made readable by their
# owner only. Needs only coreutils.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

say() { printf 'dev-secrets: %s\n' "$*"; }

# 24 random bytes as 48 hex digits.
password() { od -An -vtx1 -N24 /dev/urandom | tr -d ' \n'; }

# Writes $1 from stdin unless it exists; only its owner may read it. Runs at the end
# of a pipeline (a subshell): the trap removes a half-written file if it fails.
make_file() {
    local target=$1
    if [ -e "$target" ]; then
        say "kept $target (exists)"
        cat >/dev/null
        return
    fi
    tmp=$(umask 077 && mktemp "$target.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    cat >"$tmp"
    mv "$tmp" "$target"
    say "made $target"
}

# --- 1. the Kubernetes secrets ------------------------------------------------------
n=0
while IFS= read -r example; do
    n=$((n + 1))
    while IFS= read -r line || [ -n "$line" ]; do
        case $line in
            *=change-me) printf '%s=%s\n' "${line%=change-me}" "$(password)" ;;
            *) printf '%s\n' "$line" ;;
        esac
    done <"$example" | make_file "${example%.example}"
done < <(find manifests -path '*/secrets/*.env.example' -type f | sort)
[ "$n" -gt 0 ] || { say "no manifests/**/secrets/*.env.example found" >&2; exit 1; }

# --- 2. Compose's .env: the same values as the base secrets ---------------------------
{
    echo "# Made by scripts/dev-secrets.sh from manifests/base/secrets/*.env (the same"
    echo "# users and passwords); Docker Compose reads it for compose.yaml. Git ignores it."
    for f in manifests/base/secrets/*.env; do
        grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$f"
    done
} | make_file .env
