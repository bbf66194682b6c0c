#!/usr/bin/env bash
# Builds the lab guest's initramfs: static busybox, the 9p modules of the installed Debian kernel
# (decompressed: busybox insmod cannot read .ko.xz) and initramfs-init.sh as /init.
# Everything else the guest runs comes from the host's / over 9p, so the image stays ~1.5 MB.
#
# usage: build-initramfs.sh [--kver VER] OUT.cpio.gz
#   VER defaults to the newest /boot/vmlinuz-*. Set VFPOOL_LAB_SKIP_INSTALL=1 to skip the
#   package check (run-in-guest.sh does it once itself).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
err() { echo "build-initramfs: $*" >&2; exit 1; }

kver=
while [ $# -gt 0 ]; do
  case "$1" in
    --kver) [ $# -ge 2 ] || err "--kver needs a value"; kver=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) err "unknown option $1" ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || err "usage: build-initramfs.sh [--kver VER] OUT.cpio.gz"
out=$1

if [ "${VFPOOL_LAB_SKIP_INSTALL:-0}" != 1 ]; then
  bash "$repo/scripts/install-lab-packages.sh" lab
fi
if [ -z "$kver" ]; then
  kver=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n1)
  [ -n "$kver" ] || err "no /boot/vmlinuz-* (is linux-image-amd64 installed?)"
fi
[ -d "/lib/modules/$kver" ] || err "no /lib/modules/$kver for kernel $kver"
[ -x /bin/busybox ] || err "no /bin/busybox (install busybox-static)"
# A dynamic busybox (package busybox) would need the host's libc inside the initramfs.
case "$(LC_ALL=C ldd /bin/busybox 2>&1 || true)" in
  *"not a dynamic"*|*"statically linked"*) ;;
  *) err "/bin/busybox is not static (install busybox-static, not busybox)" ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$here/initramfs-init.sh" "$root/init"
install -m 0755 "$here/modprobe-chroot.sh" "$root/bin/modprobe-chroot"
# The kernel opens /dev/console for /init before any devtmpfs exists. Its built-in initramfs
# usually provides the node, but ship it too when we are allowed to mknod.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

# `modprobe --show-depends a b` takes b as an option of a, so ask per module; keep first-seen
# order (dependencies come first) and drop duplicates and built-ins.
: >"$root/lib/modules/load.order"
declare -A seen=()
for m in netfs 9pnet 9p 9pnet_virtio; do
  deps=$(modprobe -S "$kver" --show-depends "$m") || err "modprobe -S $kver --show-depends $m failed"
  while read -r verb path _; do
    [ "$verb" = insmod ] || continue
    name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
    [ -z "${seen[$name]:-}" ] || continue
    seen[$name]=1
    case "$path" in
      *.xz) xz -dc "$path" >"$root/lib/modules/$name" ;;
      *.zst) zstd -qdc "$path" >"$root/lib/modules/$name" ;;
      *.gz) gzip -dc "$path" >"$root/lib/modules/$name" ;;
      *) cp "$path" "$root/lib/modules/$name" ;;
    esac || err "cannot decompress $path"
    echo "$name" >>"$root/lib/modules/load.order"
  done <<<"$deps"
done
grep -qx 9pnet_virtio.ko "$root/lib/modules/load.order" || err "9pnet_virtio is not a module of $kver?"

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
(cd "$root" && find . -print0 | LC_ALL=C sort -z \
  | cpio --null -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -9 >"$tmp"
mv -f "$tmp" "$out"
echo "build-initramfs: $out ($(du -k "$out" | cut -f1) KiB, kernel $kver)" >&2
