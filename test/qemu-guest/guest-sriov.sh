#!/usr/bin/env bash
# Guest script (run-in-guest.sh): the guest kernel's view of an emulated virtio-net SR-IOV NIC
# that vfpool generated for QEMU >= 10.1 (`<vfpool:sriov-nic vfs='N'/>`): a virtio-net PF whose
# sriov_totalvfs is N, VFs created by writing sriov_numvfs, each VF a virtio-net netdev with the
# MAC vfpool gave it on QEMU's command line (virtio-net VFs take no MAC through the PF).
# Reads $VFPOOL_LAB_OUT/expect.txt (written from the generated arguments):
#   vfs N            pf_mac M            vf SLOT.FUNCTION MAC   (one per VF, guest address on the PF's bus)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

n=$(expect vfs)
pf_mac=$(expect pf_mac)
[[ "$n" =~ ^[0-9]+$ ]] && [ -n "$pf_mac" ] || { record FAIL "expectations" "need 'vfs N' and 'pf_mac M' in $expect_file"; exit 1; }
declare -A want_mac=()
while read -r key at m; do [ "$key" = vf ] && want_mac[$at]=$m; done <"$expect_file"
[ "${#want_mac[@]}" = "$n" ] || { record FAIL "expectations" "$expect_file lists ${#want_mac[@]} VF MACs for $n VFs"; exit 1; }

at_of() { # BDF -> SLOT.FUNCTION in QEMU's addr= notation (hex, no leading zeros)
  local dev=${1##*:}; printf '%x.%x' $(( 16#${dev%.*} )) $(( 16#${dev#*.} ))
}
netdev_of() { ls "/sys/bus/pci/devices/$1"/virtio*/net 2>/dev/null | head -n1; }

pf= P= pfnet=
find_pf() {
  local f d
  for f in /sys/bus/pci/devices/*/sriov_totalvfs; do
    d=$(dirname "$f")
    [ "$(cat "$d/vendor")" = 0x1af4 ] || continue
    pf=$(basename "$d"); P=$d
  done
  [ -n "$pf" ] || { echo "no virtio PCI function with sriov_totalvfs; devices: $(cd /sys/bus/pci/devices && for d in *; do printf '%s=%s:%s ' "$d" "$(cat $d/vendor)" "$(cat $d/device)"; done)"; return 1; }
  pfnet=$(netdev_of "$pf")
  [ "$(cat "$P/device")" = 0x1041 ] || { echo "$pf is $(cat "$P/vendor"):$(cat "$P/device"), want 1af4:1041 (modern virtio-net)"; return 1; }
  [ "$(basename "$(readlink -f "$P/driver")")" = virtio-pci ] || { echo "$pf driver $(readlink -f "$P/driver")"; return 1; }
  [ -n "$pfnet" ] && [ "$(mac_of "$pfnet")" = "$pf_mac" ] || { echo "PF netdev '${pfnet}' has MAC '$(mac_of "$pfnet")', want $pf_mac"; return 1; }
  echo "$pf (1af4:1041, virtio-pci) netdev $pfnet MAC $pf_mac"
}
check "virtio-net PF with vfpool's MAC" find_pf || exit 1

totalvfs() {
  local t; t=$(cat "$P/sriov_totalvfs")
  [ "$t" = "$n" ] && [ "$(cat "$P/sriov_numvfs")" = 0 ] || { echo "sriov_totalvfs=$t numvfs=$(cat "$P/sriov_numvfs"), want $n and 0"; return 1; }
  echo "sriov_totalvfs=$t offset=$(cat "$P/sriov_offset") stride=$(cat "$P/sriov_stride"), numvfs 0"
}
check "sriov_totalvfs = $n" totalvfs || exit 1

vfs=()
create() {
  local e
  e=$( { printf '%s\n' "$n" >"$P/sriov_numvfs"; } 2>&1 ) || { echo "write $n to sriov_numvfs: ${e##*: }"; return 1; }
  local l
  for l in $(ls -d "$P"/virtfn* 2>/dev/null | sort -V); do vfs+=("$(basename "$(readlink -f "$l")")"); done
  [ "${#vfs[@]}" = "$n" ] || { echo "numvfs=$(cat "$P/sriov_numvfs"), virtfn links: ${#vfs[@]}"; return 1; }
  echo "numvfs=$(cat "$P/sriov_numvfs"): ${vfs[*]}"
}
check "write $n to sriov_numvfs: $n VFs" create || exit 1

all_netdevs() { local v; for v in "${vfs[@]}"; do [ -n "$(netdev_of "$v")" ] || return 1; done; }
vf_macs() {
  wait_for 90 all_netdevs || true
  local v at nd m bad= good=0 seen=" "
  for v in "${vfs[@]}"; do
    at=$(at_of "$v"); nd=$(netdev_of "$v"); m=$(mac_of "$nd")
    if [ -z "$nd" ]; then bad+="$v ($at): no netdev ($(basename "$(readlink -f "/sys/bus/pci/devices/$v/driver")")); "
    elif [ -z "${want_mac[$at]:-}" ]; then bad+="$v ($at): no VF of vfpool's at $at; "
    elif [ "$m" != "${want_mac[$at]}" ]; then bad+="$v ($at) $nd: MAC $m, want ${want_mac[$at]}; "
    else
      case "$seen" in *" $m "*) bad+="$v: MAC $m twice; " ;; esac
      seen+="$m "; good=$((good + 1))
    fi
  done
  [ -z "$bad" ] || { echo "$bad"; return 1; }
  echo "$good VF netdevs, each with the MAC vfpool put at its address:$(for v in "${vfs[@]}"; do printf ' %s=%s' "$(at_of "$v")" "$(mac_of "$(netdev_of "$v")")"; done)"
}
check "each VF netdev has vfpool's MAC" vf_macs

if [ "$n" -gt 7 ]; then
  # More than 7 VFs do not fit functions 1-7 of one slot: their devfn runs past function 7,
  # which only a PF with ARI behind an ARI-forwarding port can address.
  ari() {
    local v beyond=
    for v in "${vfs[@]}"; do [ "${v##*:}" \> "00.7" ] && beyond+="$v "; done
    [ -n "$beyond" ] || { echo "no VF beyond function 7: ${vfs[*]}"; return 1; }
    echo "VFs past function 7 (ARI): $beyond"
  }
  check "ARI: VFs beyond function 7" ari
fi

remove() {
  local e
  e=$( { printf '0\n' >"$P/sriov_numvfs"; } 2>&1 ) || { echo "write 0: ${e##*: }"; return 1; }
  [ -z "$(ls -d "$P"/virtfn* 2>/dev/null)" ] || { echo "virtfn links left"; return 1; }
  echo "write 0: every virtfn gone"
}
check "write 0 removes the VFs" remove

echo
ip -br link
exit $failed
