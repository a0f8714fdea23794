#!/usr/bin/env bash
# Reads a JSON array of PromQL expressions on stdin and prints, as JSON, for each one the
# metric names its vector selectors use and any syntax errors, parsed with Prometheus's own
# PromQL grammar (@prometheus-io/lezer-promql). Installs the pinned packages on first use.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_deps
exec node "$typecheck_dir/promql-names.mjs"
