#!/usr/bin/env bash
# Installs the Debian packages the real-parts tests need (QEMU 10 with igb, the 6.12 kernel,
# libvirt 11.3) from bookworm-backports, plus the bookworm tools the lab initramfs is built from.
# Idempotent: a machine that has them already only pays for a dpkg-query (see the fast path).
set -euo pipefail
want_libvirt=1; want_lab=1
want_qemu=0
case "${1:-all}" in
  qemu) want_lab=0; want_libvirt=0; want_qemu=1 ;; # npm test and npm run demo: QEMU 10, man, systemd-analyze
  libvirt) want_lab=0 ;;
  lab) want_libvirt=0 ;;
  all) ;;
  *) echo "usage: $0 [all|lab|libvirt|qemu]" >&2; exit 2 ;;
esac
bp=()
# man-db/groff-base: the man page test renders with `man -l`; systemd: `systemd-analyze verify`
# of vfpool-reconcile.service (the package installs fine without systemd as PID 1).
plain=(iproute2 kmod man-db groff-base systemd)
# bpftool with QEMU too: npm test's test/qemu/deliver-real.test.ts delivers vfio nodes to a real
# QEMU, and on a host with cgroup2 mounted (hybrid too) that reads the BPF device programs.
[ $want_qemu = 0 ] || { bp+=(qemu-system-x86); plain+=(bpftool); }
if [ $want_lab = 1 ]; then
  bp+=(qemu-system-x86 linux-image-amd64)
  # bpftool: the cgroup v2 device ACL libvirt attaches is a BPF map (src/qemu/device-cgroup.ts).
  plain+=(busybox-static cpio xz-utils bpftool)
fi
if [ $want_libvirt = 1 ]; then
  bp+=(qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-network libvirt-clients)
  plain+=(bpftool) # the started hook extends libvirt's cgroup2 device map (src/qemu/device-cgroup.ts)
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
# The mirror this machine already uses for bookworm (a local mirror or an apt proxy keeps
# working): the first URI of an enabled deb822 stanza whose Suites list bookworm, else the
# first `deb URI bookworm` line of sources.list, else Debian's own address. VFPOOL_DEBIAN_MIRROR
# overrides all three.
debian_mirror() {
  local m=""
  if [ -n "${VFPOOL_DEBIAN_MIRROR:-}" ]; then echo "$VFPOOL_DEBIAN_MIRROR"; return; fi
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    m=$(awk '
      function flush() { if (deb && suite && enabled && uri != "" && !found) { print uri; found = 1 } deb = 0; suite = 0; enabled = 1; uri = "" }
      BEGIN { enabled = 1 }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") suite = 1 }
      tolower($1) == "enabled:" { if (tolower($2) == "no") enabled = 0 }
      tolower($1) == "uris:" { uri = $2 }
      END { flush() }' "$f")
    [ -z "$m" ] || break
  done
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    # deb [option=value ...] URI SUITE COMPONENT...
    m=$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' /etc/apt/sources.list | awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

src=/etc/apt/sources.list.d/backports.sources
if [ ! -f "$src" ]; then
  mirror=$(debian_mirror)
  cat >"$src" <<SRC
Types: deb
URIs: ${mirror%/}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  echo "install-lab-packages: bookworm-backports from $mirror (the machine's bookworm mirror)" >&2
  rm -f /var/lib/apt/.vfpool-updated
fi
if [ ! -f /var/lib/apt/.vfpool-updated ]; then
  apt-get update -qq
  touch /var/lib/apt/.vfpool-updated
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${plain[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${bp[@]}" >/dev/null
