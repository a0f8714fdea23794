#!/usr/bin/env bash
# Install MySQL 9.7 (mysqld only) from Debian's sid packages into a private prefix, for the
# tests' and benchmarks' throwaway MySQL servers (exporter/throwaway/mysql.py). Idempotent:
# when the prefix is complete and every library of mysqld resolves inside it, it only
# prints the prefix (about 20 ms).
#
# Debian bookworm has no MySQL server; sid has mysql-9.7. Nothing is installed system-wide
# and /etc/apt is never touched: a private apt configuration (its own sources.list naming
# sid, its own lists and cache) downloads the .debs (`apt-get download`, about 43 MB),
# `dpkg -x` unpacks them into one prefix (about 240 MB), and mysqld runs through the
# prefix's own dynamic loader with --library-path, so sid's libc and libraries never meet
# the host's. `bin/mysqld` there is a symlink to that loader, so the process is named
# mysqld.
#
# The prefix is outside the git tree so that every worktree, clone and CI run on the machine
# shares it:
#   ${MYSQL_IDLE_EXPORTER_MYSQL_PREFIX:-${XDG_CACHE_HOME:-$HOME/.cache}/mysql-idle-exporter/mysql-9.7}
# (exporter/throwaway/mysql.py computes the same default). Delete it to fetch again.
#
# Usage: scripts/fetch-mysql.sh        (prints the prefix)
# Needs: apt-get, dpkg, flock; network access to Debian's archive.
set -euo pipefail

SERIES="9.7"
# mysqld and the sid runtime it links against. The package lists every library its
# plugins may want too (curl, fido2, mecab, ...); mysqld itself needs only these, which
# the loader's --list check below proves (sid renames libraries: it says which is missing).
PACKAGES=(
    mysql-server-core libc6 libstdc++6 libgcc-s1 libicu78 libssl3t64 libzstd1
    libprotobuf-lite32t64 zlib1g liblz4-1 libxxhash0 libaio1t64 libnuma1
    libgoogle-perftools4t64 libunwind8 liblzma5
)

cache="${XDG_CACHE_HOME:-$HOME/.cache}"
prefix="${MYSQL_IDLE_EXPORTER_MYSQL_PREFIX:-$cache/mysql-idle-exporter/mysql-$SERIES}"

case "$(uname -m)" in
    x86_64) triplet="x86_64-linux-gnu"; loader_name="ld-linux-x86-64.so.2" ;;
    aarch64) triplet="aarch64-linux-gnu"; loader_name="ld-linux-aarch64.so.1" ;;
    *) echo "fetch-mysql: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac

# Every library mysqld loads must come from the prefix (none from the host, none missing).
check_prefix() {
    local root="$1" lib="$1/usr/lib/$triplet" listing
    [[ -x "$lib/$loader_name" && -x "$root/usr/sbin/mysqld" ]] || return 1
    listing="$("$lib/$loader_name" --library-path "$lib" --list "$root/usr/sbin/mysqld" 2>&1)" \
        || { echo "$listing" >&2; return 1; }
    if grep -q "not found" <<<"$listing"; then
        echo "fetch-mysql: libraries missing from the prefix:" >&2
        grep "not found" <<<"$listing" >&2
        return 1
    fi
    if awk -v root="$root/" '/=>/ && index($3, root) != 1 { bad = 1; print "  " $0 } END { exit !bad }' \
            <<<"$listing" >&2; then
        echo "fetch-mysql: the libraries above resolve outside the prefix" >&2
        return 1
    fi
}

if [[ -e "$prefix/.complete" ]] && check_prefix "$prefix" 2>/dev/null; then
    echo "$prefix"
    exit 0
fi

mkdir -p "$(dirname "$prefix")"
# Worktrees and CI may run setup at the same time: one fetch at a time.
exec 9>"$prefix.lock"
flock 9
if [[ -e "$prefix/.complete" ]] && check_prefix "$prefix" 2>/dev/null; then
    echo "$prefix"
    exit 0
fi

started=$(date +%s)
work="$(mktemp -d "$(dirname "$prefix")/.fetch-mysql.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/prefix"
touch "$work/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $keyring ]] || { echo "fetch-mysql: $keyring is missing (debian-archive-keyring)" >&2; exit 1; }
echo "deb [signed-by=$keyring] http://deb.debian.org/debian sid main" >"$work/sources.list"
cat >"$work/apt.conf" <<EOF
Dir::Etc::SourceList "$work/sources.list";
Dir::Etc::SourceParts "$work/no-such-dir";
Dir::State::Lists "$work/lists";
Dir::State::status "$work/status";
Dir::Cache "$work/cache";
APT::Sandbox::User "root";
Acquire::Languages "none";
EOF
export APT_CONFIG="$work/apt.conf"

echo "fetch-mysql: reading Debian sid's package list" >&2
if ! apt-get update -qq >"$work/apt.log" 2>&1; then
    cat "$work/apt.log" >&2
    echo "fetch-mysql: cannot read Debian sid's package list (see above)" >&2
    exit 1
fi
version="$(apt-cache policy mysql-server-core | awk '/Candidate:/ { print $2 }')"
if [[ "$version" != "$SERIES".* ]]; then
    echo "fetch-mysql: Debian sid's mysql-server-core is '${version:-absent}', not $SERIES.x:" \
         "update SERIES and PACKAGES in $0" >&2
    exit 1
fi
echo "fetch-mysql: downloading mysql-server-core $version and its runtime from sid" >&2
if ! (cd "$work/debs" && apt-get download -qq "${PACKAGES[@]}" >"$work/apt.log" 2>&1); then
    cat "$work/apt.log" >&2
    echo "fetch-mysql: apt-get download failed (see above)" >&2
    exit 1
fi
for deb in "$work"/debs/*.deb; do
    dpkg -x "$deb" "$work/prefix"
done
mkdir -p "$work/prefix/bin"
ln -s "../usr/lib/$triplet/$loader_name" "$work/prefix/bin/mysqld"
if ! check_prefix "$work/prefix"; then
    echo "fetch-mysql: mysqld from sid does not run from the prefix: update PACKAGES in $0" >&2
    exit 1
fi
# The loader's --list cannot be run from the new place before the move; it is checked again
# by the next call. What was fetched, for the record (and the template datadirs' key).
{
    echo "mysql-server-core $version"
    (cd "$work/debs" && ls -1 ./*.deb | sed 's|^\./||')
} >"$work/prefix/.complete"
rm -rf "$prefix"
mv "$work/prefix" "$prefix"
check_prefix "$prefix"
echo "fetch-mysql: MySQL $version in $prefix ($(du -sm "$prefix" | cut -f1) MB," \
     "$(( $(date +%s) - started )) s)" >&2
echo "$prefix"
