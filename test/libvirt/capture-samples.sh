#!/usr/bin/env bash
# Captures what a real libvirt 11.3 daemon hands a network hook for networks that carry a vfpool
# pool in <metadata>, and saves it under test/libvirt/samples/ (the core's hook tests parse these).
# It installs a throwaway logging hook of its own (no vfpool needed), starts the daemon with
# libvirtd.sh, and takes everything down again, also on failure.
#
#   sudo bash test/libvirt/capture-samples.sh [OUTDIR]     (default test/libvirt/samples)
#
# Networks (fixed UUIDs, so the samples are stable):
#   vfp-net  <forward mode='hostdev' managed='yes'/> + metadata pool on eth1, 4 VFs: starts on a
#            machine without eth1 (libvirt checks nothing for a hostdev network with no pool);
#            start begin, started begin, then net-destroy: stopped end.
#   vfp-big  the same form, 99 VFs; the hook refuses `start begin` (exit 1, a sentence on stderr)
#            to record virsh's error text and that libvirt still calls `stopped end` after it.
#   vfp-pf   <forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward> + metadata: the hook
#            runs at `start begin`, then libvirt fails ("No usable Vf's present on SRIOV PF eth1")
#            when eth1 does not exist, and calls `stopped end`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$here/samples}
[ "$(id -u)" = 0 ] || { echo "capture-samples: needs root" >&2; exit 1; }

(cd "$repo" && bash scripts/install-lab-packages.sh libvirt)

hookdir=/etc/libvirt/hooks/network.d
hook=$hookdir/00-vfpool-capture
work=$(mktemp -d /tmp/vfpool-capture.XXXXXX)
made_hookdir=0
started=0
cleanup() {
  local rc=$?
  set +e
  if [ $started = 1 ]; then
    for n in vfp-net vfp-big vfp-pf; do
      virsh -q -c qemu:///system net-destroy "$n" >/dev/null 2>&1
      virsh -q -c qemu:///system net-undefine "$n" >/dev/null 2>&1
    done
    bash "$here/libvirtd.sh" stop >/dev/null
  fi
  rm -f "$hook"
  [ $made_hookdir = 1 ] && rmdir "$hookdir" 2>/dev/null
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A daemon that is already up would not discover a hook added now.
bash "$here/libvirtd.sh" stop >/dev/null
if pgrep -x libvirtd >/dev/null; then
  echo "capture-samples: a libvirtd not started by libvirtd.sh is running; stop it first" >&2
  exit 1
fi

[ -d "$hookdir" ] || { mkdir -p "$hookdir"; made_hookdir=1; }
mkdir -p "$work/cap"
# The hook gets no useful environment from libvirt, so the capture directory is baked in.
cat >"$hook" <<HOOK
#!/bin/sh
n=\$(date +%s%N)
cat >"$work/cap/\$n \$1 \$2 \$3.xml"
rc=0
if [ "\$1 \$2" = "vfp-big start" ]; then
  echo "vfpool: pool vfp-big: PF eth1 has sriov_totalvfs 8, cannot activate 99 VFs (capture hook)" >&2
  rc=1
fi
echo "\$1 \$2 \$3 \$4 -> exit \$rc" >>"$work/calls.log"
exit \$rc
HOOK
chmod 755 "$hook"

VFPOOL_LAB_SKIP_PACKAGES=1 bash "$here/libvirtd.sh" start
started=1
v() { virsh -c qemu:///system "$@"; }

meta() { # meta NUM
  echo "<metadata><vfpool:pool xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:pf dev='eth1'><vfpool:vf num='$1'/></vfpool:pf></vfpool:pool></metadata>"
}
cat >"$work/vfp-net.xml" <<XML
<network><name>vfp-net</name><uuid>5f1c8a52-3b8e-4d7a-9c61-0a5e2f4b7d01</uuid><forward mode='hostdev' managed='yes'/>$(meta 4)</network>
XML
cat >"$work/vfp-big.xml" <<XML
<network><name>vfp-big</name><uuid>5f1c8a52-3b8e-4d7a-9c61-0a5e2f4b7d02</uuid><forward mode='hostdev' managed='yes'/>$(meta 99)</network>
XML
cat >"$work/vfp-pf.xml" <<XML
<network><name>vfp-pf</name><uuid>5f1c8a52-3b8e-4d7a-9c61-0a5e2f4b7d03</uuid><forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>$(meta 4)</network>
XML

for n in vfp-net vfp-big vfp-pf; do v -q net-define "$work/$n.xml"; done
v -q net-start vfp-net
v -q net-destroy vfp-net
v -q net-start vfp-big 2>"$work/vfp-big.err" && { echo "capture-samples: vfp-big started" >&2; exit 1; }
v -q net-start vfp-pf 2>"$work/vfp-pf.err" && { echo "capture-samples: vfp-pf started" >&2; exit 1; }

mkdir -p "$out"
for f in "$work"/cap/*.xml; do
  read -r _ net op phase <<<"$(basename "$f" .xml)"
  cp "$f" "$out/stdin-network-$net-$op-$phase.xml"
done
cp "$work/calls.log" "$out/network-hook-calls.log"
{ echo "# virsh -c qemu:///system net-start vfp-big (hook exits 1 at start begin)"; cat "$work/vfp-big.err"
  echo "# virsh -c qemu:///system net-start vfp-pf (no netdev eth1 on this machine)"; cat "$work/vfp-pf.err"
} >"$out/virsh-net-start-errors.txt"
for n in vfp-net vfp-big vfp-pf; do cp "$work/$n.xml" "$out/define-$n.xml"; done
echo "samples written to $out:"
ls -1 "$out"
