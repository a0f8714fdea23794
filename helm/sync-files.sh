#!/usr/bin/env bash
# Copy the alert rules and the Grafana dashboard from dashboards/ into the chart.
#
# Helm cannot read files outside a chart, so the chart keeps byte-identical copies in
# helm/mysql-idle-exporter/files/ (tests/helm/test_chart_files.py fails when they drift).
# Run this after every change to dashboards/mysql-idle-exporter.{rules.yml,json}.
#
# Usage: helm/sync-files.sh [SOURCE_DIR]   (default: <repo>/dashboards)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${1:-$here/../dashboards}"
dest="$here/mysql-idle-exporter/files"

mkdir -p "$dest"
for name in mysql-idle-exporter.rules.yml mysql-idle-exporter.json; do
    if [[ ! -f "$src/$name" ]]; then
        echo "sync-files: $src/$name not found" >&2
        exit 1
    fi
    if cmp -s "$src/$name" "$dest/$name"; then
        echo "sync-files: $name up to date"
    else
        cp "$src/$name" "$dest/$name"
        echo "sync-files: copied $name"
    fi
done
