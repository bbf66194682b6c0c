#!/usr/bin/env bash
# Installs a QEMU that has emulated virtio-net SR-IOV (`-device virtio-net-pci,sriov-pf=…`, first
# shipped in QEMU 10.1) WITHOUT touching the host's own packages: bookworm-backports stops at QEMU
# 10.0, so Debian trixie (minbase, debootstrap) goes into a folder of its own and QEMU 11.1 from
# trixie-backports is installed in there. scripts/qemu-sriov runs that QEMU on the host through the
# folder's own dynamic loader (no chroot: kernel images, 9p shares and sockets stay host paths).
#
# usage: install-qemu-sriov.sh            (root; idempotent)
#   DIR = $VFPOOL_QEMU_SRIOV_DIR, default /var/cache/vfpool/qemu-sriov (outside any checkout, so
#   every clone and every CI run on this machine reuses it). Fast path: when DIR holds a QEMU that
#   this script finished installing (DIR/.vfpool-qemu-sriov), nothing runs but a file test.
#   The mirror is the machine's own Debian mirror (first `URIs:` of the bookworm stanza in
#   /etc/apt/sources.list.d/debian.sources, or /etc/apt/sources.list), $VFPOOL_DEBIAN_MIRROR wins.
# First run: ~35-60 s and ~260 MiB (apt lists and .debs are removed afterwards).
# Exit: 0 ready; 1 failed (DIR left as it was: the new tree is built next to it and renamed).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${VFPOOL_QEMU_SRIOV_DIR:-/var/cache/vfpool/qemu-sriov}
marker=$dir/.vfpool-qemu-sriov
err() { echo "install-qemu-sriov: $*" >&2; exit 1; }

case "$dir" in /*) ;; *) err "VFPOOL_QEMU_SRIOV_DIR must be an absolute path, got '$dir'" ;; esac
[ -f "$marker" ] && [ -x "$dir/usr/bin/qemu-system-x86_64" ] && exit 0

[ "$(id -u)" = 0 ] || err "needs root (debootstrap, chroot, apt-get) to create $dir; run it as root"

mkdir -p "$(dirname "$dir")"
# Two runs at once (parallel test jobs on a fresh machine) would debootstrap over each other.
exec 9>"$(dirname "$dir")/.qemu-sriov.lock"
flock -w 900 9 || err "another install-qemu-sriov.sh has held $(dirname "$dir")/.qemu-sriov.lock for 15 minutes"
[ -f "$marker" ] && [ -x "$dir/usr/bin/qemu-system-x86_64" ] && exit 0

mirror=${VFPOOL_DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  # deb822: stanzas separated by blank lines; take the URIs of the one serving the main suite
  # (not -security, which is a different archive).
  mirror=$(awk '
    /^[[:space:]]*$/ { if (uri != "" && main) { print uri; exit } uri = ""; main = 0; next }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { for (i = 2; i <= NF; i++) if ($i !~ /-security$/) main = 1 }
    END { if (uri != "" && main) print uri }
  ' /etc/apt/sources.list.d/debian.sources | head -n1)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || err "cannot find the machine's Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; set VFPOOL_DEBIAN_MIRROR=http://…/debian"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

export DEBIAN_FRONTEND=noninteractive
apt_host() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
if ! command -v debootstrap >/dev/null; then
  echo "install-qemu-sriov: installing debootstrap" >&2
  apt_host install -y -qq --no-install-recommends debootstrap debian-archive-keyring >/dev/null \
    || { apt_host update -qq && apt_host install -y -qq --no-install-recommends debootstrap debian-archive-keyring >/dev/null; } \
    || err "apt-get install debootstrap failed"
fi
[ -f "$keyring" ] || err "no $keyring (package debian-archive-keyring)"

new=$dir.new
mounted=
cleanup() {
  [ -z "$mounted" ] || umount "$new/proc" 2>/dev/null || umount -l "$new/proc" 2>/dev/null || true
  rm -rf "$new"
}
trap cleanup EXIT
rm -rf "$new"
start=$SECONDS
echo "install-qemu-sriov: debootstrap trixie (minbase) into $new from $mirror" >&2
debootstrap --variant=minbase --keyring="$keyring" trixie "$new" "$mirror" >"$new.log" 2>&1 \
  || { tail -n 20 "$new.log" >&2; err "debootstrap trixie $new $mirror failed (log above, full: $new.log)"; }
rm -f "$new.log"
cat >"$new/etc/apt/sources.list.d/trixie-backports.sources" <<SRC
Types: deb
URIs: $mirror
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
# Package scripts in the chroot want /proc; nothing else of the host is needed.
mount -t proc proc "$new/proc"; mounted=1
chroot "$new" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  apt-get update -qq || err "apt-get update inside $new failed"
# trixie's own QEMU (10.0) lacks sriov-pf: take trixie-backports'.
chroot "$new" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  apt-get -o Dpkg::Use-Pty=0 install -y -qq --no-install-recommends -t trixie-backports qemu-system-x86 >/dev/null \
  || err "apt-get install -t trixie-backports qemu-system-x86 inside $new failed"
chroot "$new" apt-get clean
rm -rf "$new"/var/lib/apt/lists/*
umount "$new/proc"; mounted=

# Prove it before calling it installed: the launcher must run it and it must know sriov-pf.
VFPOOL_QEMU_SRIOV_DIR=$new sh "$here/qemu-sriov" -device virtio-net-pci,help 2>&1 | grep -q 'sriov-pf=' \
  || err "the QEMU installed in $new has no virtio-net-pci sriov-pf property ($(VFPOOL_QEMU_SRIOV_DIR=$new sh "$here/qemu-sriov" -version 2>&1 | head -n1))"
version=$(VFPOOL_QEMU_SRIOV_DIR=$new sh "$here/qemu-sriov" -version | head -n1)
echo "$version" >"$new/.vfpool-qemu-sriov"
rm -rf "$dir"
mv "$new" "$dir"
echo "install-qemu-sriov: $version in $dir ($(du -sm "$dir" | cut -f1) MiB, $(( SECONDS - start )) s)" >&2
