#!/usr/bin/env bash
# Installs the Debian packages the real-parts tests need (QEMU 10 with igb, the 6.12 kernel,
# libvirt 11.3) from bookworm-backports, plus the bookworm tools the lab initramfs is built from.
# Idempotent: a machine that has them already only pays for a dpkg-query (see the fast path).
set -euo pipefail
want_libvirt=1; want_lab=1
case "${1:-all}" in
  libvirt) want_lab=0 ;;
  lab) want_libvirt=0 ;;
  all) ;;
  *) echo "usage: $0 [all|lab|libvirt]" >&2; exit 2 ;;
esac
bp=()
# man-db/groff-base: the man page test renders with `man -l`; systemd: `systemd-analyze verify`
# of vfpool-reconcile.service (the package installs fine without systemd as PID 1).
plain=(iproute2 kmod man-db groff-base systemd)
if [ $want_lab = 1 ]; then
  bp+=(qemu-system-x86 linux-image-amd64)
  plain+=(busybox-static cpio xz-utils)
fi
if [ $want_libvirt = 1 ]; then
  bp+=(qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-network libvirt-clients)
fi

# Fast path: every package already installed, the backports ones from bookworm-backports
# (their versions carry ~bpoNN; bookworm's own QEMU 7.2 has no igb, its kernel is 6.1), so no
# apt at all: each lab boot calls this, and apt's own checks cost seconds.
installed() { # PKG [bpo]
  local v
  v=$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null) || return 1
  case "$v" in "install ok installed "*) ;; *) return 1 ;; esac
  [ "${2:-}" != bpo ] || case "$v" in *~bpo*) ;; *) return 1 ;; esac
}
all=1
for p in "${plain[@]}"; do installed "$p" || all=0; done
for p in "${bp[@]}"; do installed "$p" bpo || all=0; done
[ $all = 0 ] || exit 0

if [ "$(id -u)" != 0 ]; then echo "install-lab-packages: needs root (apt-get)" >&2; exit 1; fi
src=/etc/apt/sources.list.d/backports.sources
if [ ! -f "$src" ]; then
  cat >"$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  rm -f /var/lib/apt/.vfpool-updated
fi
if [ ! -f /var/lib/apt/.vfpool-updated ]; then
  apt-get update -qq
  touch /var/lib/apt/.vfpool-updated
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${plain[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bp[@]}" >/dev/null
