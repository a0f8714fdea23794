# Sourced by check.sh and promql-names.sh: installs the pinned npm packages on first use.
#
# The packages go to dashboards/typecheck/node_modules (ignored by git), installed with
# `npm ci` from the committed package-lock.json. A stamp file holds the lock file's hash,
# so a changed lock reinstalls; concurrent runs wait on a flock instead of racing npm ci.

typecheck_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ensure_deps() {
    local stamp="$typecheck_dir/node_modules/.installed-from-lock.sha256"
    local want
    want="$(sha256sum "$typecheck_dir/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    for tool in node npm flock; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "typecheck: '$tool' is required (node >= 18 and npm; flock from util-linux)" >&2
            return 1
        fi
    done
    mkdir -p "$typecheck_dir/.gen"
    (
        flock 9
        if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
            exit 0
        fi
        echo "typecheck: installing pinned npm packages (npm ci) into $typecheck_dir/node_modules" >&2
        cd "$typecheck_dir"
        npm ci --no-audit --no-fund --loglevel=error >&2
        echo "$want" >"$stamp"
    ) 9>"$typecheck_dir/.gen/npm-ci.lock"
}
