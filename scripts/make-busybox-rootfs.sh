#!/usr/bin/env bash
# Build a minimal root filesystem tarball around Debian's static busybox.
#
# Usage: scripts/make-busybox-rootfs.sh OUT.tar
#
# The tar holds /bin/busybox, one symlink per applet in /bin, /etc/passwd and /etc/group
# (root, nobody = 65534, bbuser = 1000), /tmp (1777), /root, /home/bbuser (owned by 1000)
# and empty /dev, /proc, /sys. The output is byte-for-byte reproducible for a given busybox
# binary: sorted entries, mtime 0, numeric owners, GNU format. Root is not required.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
fi
out=$1
busybox=${BUSYBOX:-/usr/bin/busybox}

if [[ ! -x $busybox ]]; then
    echo "error: $busybox not found; install it with: apt-get install busybox-static" >&2
    exit 1
fi
if ! "$busybox" --list >/dev/null 2>&1; then
    echo "error: $busybox does not list its applets; is it busybox-static?" >&2
    exit 1
fi
# A dynamically linked busybox would not run inside an empty rootfs.
if command -v file >/dev/null 2>&1 && file -L "$busybox" | grep -q 'dynamically linked'; then
    echo "error: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi

umask 022
stage=$(mktemp -d "${TMPDIR:-/tmp}/busybox-rootfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/{bin,dev,etc,home/bbuser,proc,root,sys,tmp}
chmod 0700 "$stage/root"
chmod 1777 "$stage/tmp"
chmod 0755 "$stage/home/bbuser"
install -m 0755 "$busybox" "$stage/bin/busybox"
"$busybox" --list | LC_ALL=C sort -u | while IFS= read -r applet; do
    [[ -z $applet || $applet == busybox || $applet == */* ]] && continue
    ln -s busybox "$stage/bin/$applet"
done

cat >"$stage/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
bbuser:x:1000:1000:bbuser:/home/bbuser:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$stage/etc/group" <<'GROUP'
root:x:0:
bbuser:x:1000:
nogroup:x:65534:
GROUP
chmod 0644 "$stage/etc/passwd" "$stage/etc/group"

tar_common=(--format=gnu --sort=name --mtime=@0 --numeric-owner)
tmp_out="$out.tmp.$$"
# Everything belongs to root except the home of bbuser, which is appended with owner 1000.
tar -C "$stage" "${tar_common[@]}" --owner=0 --group=0 \
    --exclude=./home/bbuser --exclude=home/bbuser \
    -cf "$tmp_out" bin dev etc home proc root sys tmp
tar -C "$stage" "${tar_common[@]}" --owner=1000 --group=1000 -rf "$tmp_out" home/bbuser
mv -f "$tmp_out" "$out"
