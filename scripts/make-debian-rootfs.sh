#!/usr/bin/env bash
# Build a Debian 12 (bookworm) minbase root filesystem tarball with debootstrap.
#
# Usage: scripts/make-debian-rootfs.sh OUT.tar
#
# The rootfs is built once and cached as ${BERTH_CACHE:-/var/cache/berth-test}/debian-bookworm.tar;
# later calls copy the cached file. The mirror is the Debian archive configured for apt on this
# machine (override with BERTH_DEBIAN_MIRROR). Needs root and takes minutes on the first run.
# The tar is written with sorted entries, mtime 0 and numeric owners.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
fi
out=$1
cache_dir=${BERTH_CACHE:-/var/cache/berth-test}
cached="$cache_dir/debian-bookworm.tar"

copy_out() {
    if [[ $(realpath -m "$out") != $(realpath -m "$cached") ]]; then
        cp -f "$cached" "$out.tmp.$$"
        mv -f "$out.tmp.$$" "$out"
    fi
}

if [[ -s $cached ]]; then
    copy_out
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "error: debootstrap needs root to build $cached" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "error: debootstrap not found; install it with: apt-get install debootstrap" >&2
    exit 1
fi

# The first Debian archive URI that apt is configured with (deb822 or one-line sources).
find_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk '
            /^[[:space:]]*#/ { next }
            /^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }
            /^deb[[:space:]]/ {
                for (i = 2; i <= NF; i++) {
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; continue }
                    if ($i ~ /\/debian\/?$/) { print $i; exit }
                    break
                }
            }' "$f"
    done | head -n 1
}
mirror=${BERTH_DEBIAN_MIRROR:-$(find_mirror)}
if [[ -z $mirror ]]; then
    echo "error: no Debian mirror found in /etc/apt/sources.list*; set BERTH_DEBIAN_MIRROR" >&2
    exit 1
fi

mkdir -p "$cache_dir"
exec 9>"$cache_dir/debian-bookworm.lock"
flock 9
# Another process may have finished the build while this one waited for the lock.
if [[ -s $cached ]]; then
    copy_out
    exit 0
fi

work=$(mktemp -d "$cache_dir/debian-build.XXXXXX")
target="$work/rootfs"
cleanup() {
    # debootstrap mounts proc and sys inside the target; never delete through a live mount.
    local m
    if [[ -d $target ]]; then
        awk -v t="$target" '$5 == t || index($5, t "/") == 1 { print $5 }' /proc/self/mountinfo |
            sort -r | while IFS= read -r m; do umount -l "$m" || true; done
    fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "make-debian-rootfs: debootstrap bookworm from $mirror (this takes a few minutes)" >&2
debootstrap --variant=minbase bookworm "$target" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    echo "error: debootstrap failed; last lines of its log:" >&2
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}
awk -v t="$target" '$5 == t || index($5, t "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while IFS= read -r m; do umount -l "$m"; done

# Container engines provide /dev, hostname and resolver files; drop host-specific and cache content.
find "$target/dev" -mindepth 1 -delete
rm -rf "$target"/var/cache/apt/*.bin "$target"/var/lib/apt/lists/* "$target"/var/log/* \
    "$target"/tmp/* "$target"/var/tmp/*
: >"$target/etc/hostname"
: >"$target/etc/resolv.conf"

tar -C "$target" --format=gnu --sort=name --mtime=@0 --numeric-owner -cf "$work/debian-bookworm.tar" .
mv -f "$work/debian-bookworm.tar" "$cached"
copy_out
