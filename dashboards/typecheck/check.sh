#!/usr/bin/env bash
# Type-checks Grafana dashboard JSON files against Grafana 11's TypeScript types.
#
#   dashboards/typecheck/check.sh [DASHBOARD.json ...]   (default: dashboards/*.json)
#
# For each file, gen.mjs writes a .ts file that declares the dashboard as a typed constant
# (`Dashboard` from @grafana/schema) and each panel as its plugin's Options/FieldConfig, then
# `tsc --noEmit --strict` checks it. Exits non-zero if any file fails. The pinned packages
# (package-lock.json) are installed with `npm ci` into node_modules/ on first use.
# Set TYPECHECK_KEEP=1 to keep the generated files under .gen/ for inspection.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -eq 0 ]]; then
    set -- "$(cd "$typecheck_dir/.." && pwd)"/*.json
fi

ensure_deps
mkdir -p "$typecheck_dir/.gen"

status=0
for json in "$@"; do
    if [[ ! -f "$json" ]]; then
        echo "typecheck: $json: no such file" >&2
        status=1
        continue
    fi
    work="$(mktemp -d "$typecheck_dir/.gen/run.XXXXXX")"
    printf '{"extends": "../../tsconfig.json", "files": ["dashboard.ts"]}\n' >"$work/tsconfig.json"
    if ! node "$typecheck_dir/gen.mjs" "$json" "$work/dashboard.ts"; then
        echo "typecheck: $json: FAILED (could not generate TypeScript from it)" >&2
        status=1
    elif [[ -t 1 ]]; then
        # on a terminal tsc shows each error with its source lines
        if "$typecheck_dir/node_modules/.bin/tsc" -p "$work/tsconfig.json" \
            --noEmit --strict --pretty true; then
            echo "typecheck: $json: OK"
        else
            echo "typecheck: $json: FAILED against @grafana/schema types" >&2
            status=1
        fi
    elif "$typecheck_dir/node_modules/.bin/tsc" -p "$work/tsconfig.json" \
        --noEmit --strict --pretty false >"$work/tsc.out" 2>&1; then
        echo "typecheck: $json: OK"
    else
        cat "$work/tsc.out"
        # name the panel and quote the line of each error: the generated file is removed
        grep -oE 'dashboard\.ts\([0-9]+,' "$work/tsc.out" | grep -oE '[0-9]+' | sort -un |
            while read -r n; do
                awk -v n="$n" '/^\/\/ panels\[/ { where = $0 }
                    NR == n { print "  line " n " in " (where ? substr(where, 4) : "the dashboard") ": " $0; exit }' \
                    "$work/dashboard.ts"
            done
        echo "typecheck: $json: FAILED against @grafana/schema types" >&2
        status=1
    fi
    if [[ -z "${TYPECHECK_KEEP:-}" ]]; then
        rm -rf "$work"
    fi
done
exit "$status"
