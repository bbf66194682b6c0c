#!/usr/bin/env bash
# Guest script (run-in-guest.sh): the guest kernel's view of a virtio-net failover pair that
# vfpool's wrapper generated: `failover=on` on the standby virtio-net and an emulated e1000e
# primary with `failover_pair_id`, same MAC, on its own pcie-root-port. QEMU keeps the primary
# hidden until the guest's virtio_net acks VIRTIO_NET_F_STANDBY, then hotplugs it; net_failover
# must enslave both under one failover master that carries the same MAC.
# Reads $VFPOOL_LAB_OUT/expect.txt: `mac M` (the pair's MAC, from the generated arguments).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

mac=$(expect mac)
[ -n "$mac" ] || { record FAIL "expectations" "no 'mac' line in $expect_file"; exit 1; }

netdevs_by_driver() { local n; for n in $(ls /sys/class/net); do [ "$(driver_of "$n")" = "$1" ] && echo "$n"; done; return 0; }
primary=
primary_up() { primary=$(netdevs_by_driver e1000e | head -n1); [ -n "$primary" ]; }

standby_seen() {
  local n found=
  for n in $(netdevs_by_driver virtio_net); do [ "$(mac_of "$n")" = "$mac" ] && found+="$n "; done
  [ -n "$found" ] || { echo "no virtio_net netdev with MAC $mac: $(ip -br link | tr '\n' ';')"; return 1; }
  echo "virtio_net netdevs with $mac: $found"
}
check "standby virtio-net with vfpool's MAC" standby_seen

# The primary is hotplugged by QEMU after feature negotiation: pciehp + e1000e probe, seconds under TCG.
primary_appears() {
  wait_for 90 primary_up || { echo "no e1000e netdev after 90 s (QEMU never un-hid the primary?); lspci-ish: $(ls /sys/bus/pci/devices | tr '\n' ' ')"; return 1; }
  local bdf; bdf=$(basename "$(readlink -f "/sys/class/net/$primary/device")")
  # Hidden at boot: the kernel enumerated it only after /init started (the hotplug QEMU did when
  # virtio_net, loaded by /init, acked STANDBY), not in the boot-time PCI scan.
  local log t_init t_dev
  log=$(dmesg)
  t_init=$(grep -m1 'Run /init as init process' <<<"$log" | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
  t_dev=$(grep -m1 "pci $bdf: \[" <<<"$log" | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
  [ -n "$t_init" ] && [ -n "$t_dev" ] || { echo "dmesg lacks 'Run /init' ($t_init) or the enumeration of $bdf ($t_dev)"; return 1; }
  awk -v a="$t_dev" -v b="$t_init" 'BEGIN { exit !(a > b) }' \
    || { echo "$bdf was enumerated at ${t_dev}s, before /init (${t_init}s): present at boot, not hidden"; return 1; }
  echo "$primary (e1000e at $bdf, $(cat "/sys/bus/pci/devices/$bdf/vendor"):$(cat "/sys/bus/pci/devices/$bdf/device")) enumerated at ${t_dev}s, after /init (${t_init}s): hotplugged once the guest acked STANDBY"
}
check "primary e1000e hotplugged after negotiation" primary_appears || { echo; dmesg | tail -n 30; exit 1; }

master=
enslaved() {
  local m
  wait_for 30 test -e "/sys/class/net/$primary/master" || { echo "$primary has no master: $(ip -d link show "$primary" | tr '\n' ' ')"; return 1; }
  master=$(basename "$(readlink -f "/sys/class/net/$primary/master")")
  local lowers; lowers=$(cd "/sys/class/net/$master" && ls -d lower_* 2>/dev/null | sed 's/^lower_//' | sort | tr '\n' ' ')
  standby=
  for m in $lowers; do [ "$m" != "$primary" ] && standby=$m; done
  [ -n "$standby" ] || { echo "master $master has lowers '$lowers', no standby"; return 1; }
  [ "$(driver_of "$standby")" = virtio_net ] || { echo "the other slave $standby of $master is driven by $(driver_of "$standby"), not virtio_net"; return 1; }
  [ "$(basename "$(readlink -f "/sys/class/net/$standby/master")")" = "$master" ] || { echo "$standby's master is not $master"; return 1; }
  # iproute2's view of the same: both slaves name the master.
  ip -d link show "$primary" | grep -q " master $master " || { echo "ip -d link show $primary: no 'master $master': $(ip -d link show "$primary" | tr '\n' ' ')"; return 1; }
  ip -d link show "$standby" | grep -q " master $master " || { echo "ip -d link show $standby: no 'master $master'"; return 1; }
  echo "master $master: primary $primary + standby $standby (/sys/class/net/*/master, ip -d link)"
}
check "net_failover enslaves primary and standby under one master" enslaved || { echo; dmesg | tail -n 30; exit 1; }

same_mac() {
  local a b c
  a=$(mac_of "$master") b=$(mac_of "$standby") c=$(mac_of "$primary")
  [ "$a" = "$mac" ] && [ "$b" = "$mac" ] && [ "$c" = "$mac" ] \
    || { echo "want $mac: master $master $a, standby $standby $b, primary $primary $c"; return 1; }
  echo "master, standby and primary all $mac"
}
check "same MAC on master, standby and primary" same_mac

kernel_log() {
  local log; log=$(dmesg)
  local want=("failover master:$master registered" "failover standby slave:$standby registered" "failover primary slave:$primary registered") w miss=
  for w in "${want[@]}"; do grep -qF "$w" <<<"$log" || miss+="'$w' "; done
  [ -z "$miss" ] || { echo "dmesg lacks $miss; it has: $(grep -E 'failover (master|standby|primary)' <<<"$log" | tr '\n' ';')"; return 1; }
  grep -E 'failover (master|standby slave|primary slave):' <<<"$log" | sed 's/^\[[^]]*\] //'
}
check "dmesg: failover master, standby and primary registered" kernel_log

echo
ip -d link show
exit $failed
