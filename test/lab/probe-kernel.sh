#!/usr/bin/env bash
# Guest script: proves, on the real 6.12 kernel with QEMU's igb PF, the kernel facts vfpool is
# built on (sysfs SR-IOV interface, errno values, rtnetlink VF config, vfio-pci rebinding, and how
# to see that a QEMU holds a VF). Prints one PASS/FAIL line per check and a summary table; exits 1
# if any check fails.
#
#   bash test/lab/run-in-guest.sh test/lab/probe-kernel.sh test/lab/.out/probe
#
# It writes to sysfs and rebinds PCI drivers, so it refuses to run outside the lab guest.
set -euo pipefail

if [ "${VFPOOL_LAB_GUEST:-}" != 1 ]; then
  echo "probe-kernel: refuses to run on a real host; use: bash test/lab/run-in-guest.sh $0 OUTDIR" >&2
  exit 2
fi

declare -a rows=()
failed=0
[ -z "${VFPOOL_LAB_OUT:-}" ] || : >"$VFPOOL_LAB_OUT/probe.tsv"
now_ms() { local t=${EPOCHREALTIME/./}; echo $(( t / 1000 )); }   # bash 5; no bc on fresh hosts
t0=$(now_ms)
record() { # STATUS NAME DETAIL
  local ms=$(( $(now_ms) - t0 ))
  rows+=("$(printf '%-4s %-34s %4d.%ds  %s' "$1" "$2" $(( ms / 1000 )) $(( ms % 1000 / 100 )) "$3")")
  echo "$1 $2: $3"
  # One tab-separated line per check for run-lab.sh's table (the log line above is for people).
  [ -z "${VFPOOL_LAB_OUT:-}" ] || printf '%s\t%s\t%s\n' "$1" "$2" "${3//$'\t'/ }" >>"$VFPOOL_LAB_OUT/probe.tsv"
  [ "$1" != FAIL ] || failed=1
}
# check NAME CMD...: CMD prints a detail line; its exit status decides PASS/FAIL.
check() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then record PASS "$name" "${out//$'\n'/ | }"
  else record FAIL "$name" "${out//$'\n'/ | }"; fi
}
summary() {
  echo
  echo "==== probe-kernel summary ($(uname -r)) ===="
  printf '%s\n' "${rows[@]}"
  if [ $failed = 0 ]; then echo "ALL PASS"; else echo "SOME CHECKS FAILED"; fi
}
abort() { record FAIL "$1" "$2"; summary; exit 1; }

# Write VALUE to a sysfs FILE; print OK or the errno text the kernel returned (bash reports
# "...: write error: Device or resource busy"; keep the part after the last ": ").
sysfs_write() {
  local e
  if e=$( { printf '%s\n' "$2" >"$1"; } 2>&1 ); then echo OK; else echo "${e##*: }"; fi
}
# Poll up to SECS for CMD to succeed (VF probing and netdev creation are asynchronous-ish and
# slow under TCG).
wait_for() {
  local secs=$1; shift
  local end=$(( $(date +%s) + secs ))
  until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done
}
virtfns() { # BDFs of the PF's VFs, in virtfn order
  local l
  for l in $(ls -d "/sys/bus/pci/devices/$pf"/virtfn* 2>/dev/null | sort -V); do
    basename "$(readlink -f "$l")"
  done
}
count_virtfns() { ls -d "/sys/bus/pci/devices/$pf"/virtfn* 2>/dev/null | wc -l; }

# ---- modules and IOMMU ---------------------------------------------------------------------
mods_loaded() {
  local m missing=
  # /init already ran the host's modprobe in the chroot; running it again proves it works here.
  modprobe -a igb igbvf vfio vfio_pci vfio_iommu_type1 || { echo "modprobe failed"; return 1; }
  for m in igb igbvf vfio vfio_pci vfio_iommu_type1; do [ -d "/sys/module/$m" ] || missing+=" $m"; done
  [ -z "$missing" ] || { echo "not loaded:$missing"; return 1; }
  echo "host modprobe in chroot ok; igb igbvf vfio vfio_pci vfio_iommu_type1 loaded"
}
check "modules via host modprobe" mods_loaded

iommu_on() {
  local n; n=$(ls /sys/class/iommu 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] || { echo "no /sys/class/iommu entries (intel_iommu=on missing?)"; return 1; }
  echo "$(ls /sys/class/iommu | tr '\n' ' ')groups=$(ls /sys/kernel/iommu_groups | wc -l)"
}
check "intel IOMMU active" iommu_on

# ---- find the PF -----------------------------------------------------------------------------
pf= pfdev=
for f in /sys/class/net/*/device/sriov_totalvfs; do
  [ -e "$f" ] || continue
  pfdev=$(basename "$(dirname "$(dirname "$f")")")
  pf=$(basename "$(readlink -f "$(dirname "$f")")")
  break
done
[ -n "$pf" ] || abort "igb PF found" "no /sys/class/net/*/device/sriov_totalvfs"
P=/sys/bus/pci/devices/$pf
total=$(cat "$P/sriov_totalvfs")
drv=$(basename "$(readlink -f "$P/driver")")
if [ "$total" = 7 ] && [ "$drv" = igb ]; then
  record PASS "igb PF found" "$pfdev $pf driver=$drv totalvfs=$total offset=$(cat "$P/sriov_offset") stride=$(cat "$P/sriov_stride") autoprobe=$(cat "$P/sriov_drivers_autoprobe")"
else
  abort "igb PF found" "$pfdev $pf driver=$drv totalvfs=$total (want igb, 7)"
fi
[ "$(cat "$P/sriov_numvfs")" = 0 ] || abort "PF starts with 0 VFs" "sriov_numvfs=$(cat "$P/sriov_numvfs")"

# ---- numvfs 2 --------------------------------------------------------------------------------
numvfs2() {
  local r; r=$(sysfs_write "$P/sriov_numvfs" 2)
  [ "$r" = OK ] || { echo "write 2: $r"; return 1; }
  [ "$(count_virtfns)" = 2 ] && [ -e "$P/virtfn0" ] && [ -e "$P/virtfn1" ] \
    || { echo "virtfn links: $(ls -d "$P"/virtfn* 2>/dev/null | xargs -n1 basename | tr '\n' ' ')"; return 1; }
  echo "virtfn0=$(basename "$(readlink -f "$P/virtfn0")") virtfn1=$(basename "$(readlink -f "$P/virtfn1")") numvfs=$(cat "$P/sriov_numvfs")"
}
check "write 2 -> virtfn0..1" numvfs2 || true
mapfile -t vfs < <(virtfns)
[ "${#vfs[@]}" = 2 ] || abort "VFs present" "expected 2 VFs, have ${#vfs[@]}"

physfn_links() {
  local v bad=
  for v in "${vfs[@]}"; do
    [ "$(basename "$(readlink -f "/sys/bus/pci/devices/$v/physfn")")" = "$pf" ] || bad+=" $v"
  done
  [ -z "$bad" ] || { echo "physfn not -> $pf:$bad"; return 1; }
  echo "${vfs[*]} -> physfn $pf"
}
check "VF physfn back-links" physfn_links

vf_netdevs_present() {
  local v
  for v in "${vfs[@]}"; do ls "/sys/bus/pci/devices/$v/net" >/dev/null 2>&1 || return 1; done
}
vf_netdevs() {
  wait_for 60 vf_netdevs_present || {
    local v; for v in "${vfs[@]}"; do
      echo "$v driver=$(basename "$(readlink -f "/sys/bus/pci/devices/$v/driver" 2>/dev/null)" 2>/dev/null) net=$(ls "/sys/bus/pci/devices/$v/net" 2>/dev/null)"
    done; return 1; }
  local v out=
  for v in "${vfs[@]}"; do
    out+="$v:$(ls "/sys/bus/pci/devices/$v/net")($(basename "$(readlink -f "/sys/bus/pci/devices/$v/driver")")) "
  done
  echo "$out"
}
check "VF netdevs (igbvf)" vf_netdevs

iommu_groups() {
  local v g out= seen=" $(basename "$(readlink -f "$P/iommu_group")") "
  for v in "${vfs[@]}"; do
    [ -e "/sys/bus/pci/devices/$v/iommu_group" ] || { echo "$v has no iommu_group"; return 1; }
    g=$(basename "$(readlink -f "/sys/bus/pci/devices/$v/iommu_group")")
    case "$seen" in *" $g "*) echo "$v shares group $g"; return 1 ;; esac
    seen+="$g "; out+="$v:group$g "
  done
  echo "${out}(PF group $(basename "$(readlink -f "$P/iommu_group")"))"
}
check "iommu_group per VF (own group)" iommu_groups

ebusy() {
  local r; r=$(sysfs_write "$P/sriov_numvfs" 3)
  [ "$r" = "Device or resource busy" ] && [ "$(cat "$P/sriov_numvfs")" = 2 ] \
    || { echo "write 3 while 2: '$r', numvfs now $(cat "$P/sriov_numvfs")"; return 1; }
  echo "write 3 while 2 active: EBUSY ($r), numvfs stays 2"
}
check "write 3 while 2 -> EBUSY" ebusy

erange() {
  local r; r=$(sysfs_write "$P/sriov_numvfs" 99)
  [ "$r" = "Numerical result out of range" ] || { echo "write 99: '$r'"; return 1; }
  echo "write 99: ERANGE ($r)"
}
check "write 99 -> ERANGE" erange

zero_then_three() {
  local r; r=$(sysfs_write "$P/sriov_numvfs" 0)
  [ "$r" = OK ] && [ "$(count_virtfns)" = 0 ] || { echo "write 0: $r, virtfns $(count_virtfns)"; return 1; }
  r=$(sysfs_write "$P/sriov_numvfs" 3)
  [ "$r" = OK ] && [ "$(count_virtfns)" = 3 ] || { echo "write 3 after 0: $r, virtfns $(count_virtfns)"; return 1; }
  echo "0 then 3: OK, VFs $(virtfns | tr '\n' ' ')"
}
check "0 then 3 works" zero_then_three || true
mapfile -t vfs < <(virtfns)
[ "${#vfs[@]}" = 3 ] || abort "VFs present" "expected 3 VFs, have ${#vfs[@]}"
wait_for 60 vf_netdevs_present || true   # let igbvf settle before we poke rtnetlink

# ---- rtnetlink VF config ---------------------------------------------------------------------
# node (the host's) is the JSON parser: jq is not part of the lab packages.
vfinfo() { ip -j -d link show "$pfdev"; }
vfinfo_list() {
  local j; j=$(vfinfo)
  node -e '
    const [l] = JSON.parse(process.argv[1]);
    const v = l.vfinfo_list;
    if (!Array.isArray(v) || v.length !== 3) { console.log("vfinfo_list:", JSON.stringify(v)); process.exit(1); }
    console.log(`vfinfo_list has ${v.length} entries; vf1 = ${JSON.stringify(v[1])}`);
  ' "$j"
}
check "ip -j -d link: vfinfo_list" vfinfo_list

vf_config() {
  ip link set "$pfdev" vf 0 mac 52:54:00:12:34:56 vlan 100 qos 3 spoofchk off trust on \
    || { echo "ip link set ... vf 0 failed"; return 1; }
  node -e '
    const [l] = JSON.parse(process.argv[1]);
    const v = (l.vfinfo_list || []).find(x => x.vf === 0);
    if (!v) { console.log("no vf 0 in", JSON.stringify(l.vfinfo_list)); process.exit(1); }
    const mac = v.address ?? v.mac;
    const vl = (v.vlan_list || [])[0] || {};
    const ok = mac === "52:54:00:12:34:56" && vl.vlan === 100 && vl.qos === 3 &&
               v.spoofchk === false && v.trust === true;
    console.log(`${ok ? "" : "MISMATCH "}vf0 = ${JSON.stringify(v)}`);
    process.exit(ok ? 0 : 1);
  ' "$(vfinfo)"
}
check "vf 0 mac/vlan/qos/spoofchk/trust" vf_config

# Facts LAB.md reports, recorded as INFO (vfpool must not depend on them either way).
if e=$(ip link set "$pfdev" vf 1 state enable 2>&1); then record INFO "vf state enable" "accepted"
else record INFO "vf state enable" "$e"; fi
# igb's ndo_set_vf_rate returns EINVAL unless the PF reports link up (it checks the rate against
# the link speed), so try with the PF down (as it comes up here) and again after `ip link set up`.
if e=$(ip link set "$pfdev" vf 1 max_tx_rate 100 2>&1); then record INFO "vf max_tx_rate 100, PF down" "accepted"
else record INFO "vf max_tx_rate 100, PF down" "$e"; fi
ip link set "$pfdev" up
carrier() { [ "$(cat "/sys/class/net/$pfdev/carrier" 2>/dev/null)" = 1 ]; }
if wait_for 30 carrier; then
  if e=$(ip link set "$pfdev" vf 1 max_tx_rate 100 2>&1); then
    record INFO "vf max_tx_rate 100, PF up" "accepted; vf1 rate $(ip -j -d link show "$pfdev" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(JSON.parse(s)[0].vfinfo_list[1].rate)))')"
  else record INFO "vf max_tx_rate 100, PF up" "$e"; fi
else
  record INFO "vf max_tx_rate 100, PF up" "PF $pfdev has no carrier after 30 s"
fi

# ---- vfio-pci --------------------------------------------------------------------------------
vf=${vfs[1]}
V=/sys/bus/pci/devices/$vf
group=$(basename "$(readlink -f "$V/iommu_group")")
vfio_bind() {
  local r cur
  r=$(sysfs_write "$V/driver_override" vfio-pci); [ "$r" = OK ] || { echo "driver_override: $r"; return 1; }
  if [ -e "$V/driver" ]; then
    cur=$(basename "$(readlink -f "$V/driver")")
    r=$(sysfs_write "$V/driver/unbind" "$vf"); [ "$r" = OK ] || { echo "unbind from $cur: $r"; return 1; }
  fi
  r=$(sysfs_write /sys/bus/pci/drivers_probe "$vf"); [ "$r" = OK ] || { echo "drivers_probe: $r"; return 1; }
  [ "$(basename "$(readlink -f "$V/driver")")" = vfio-pci ] || { echo "driver now $(readlink -f "$V/driver")"; return 1; }
  [ -c "/dev/vfio/$group" ] || { echo "no /dev/vfio/$group ($(ls /dev/vfio | tr '\n' ' '))"; return 1; }
  echo "$vf: ${cur:-none} -> vfio-pci, /dev/vfio/$group"
}
check "vfio-pci bind -> /dev/vfio/GROUP" vfio_bind

holders() { # PIDs with /dev/vfio/$group open, from /proc/PID/fd links (what vfpool will read)
  local d
  for d in /proc/[0-9]*/fd; do
    ls -l "$d" 2>/dev/null | grep -q " -> /dev/vfio/$group\$" && { d=${d#/proc/}; echo "${d%/fd}"; }
  done
  return 0
}
qemu_holds() {
  local log=/tmp/qemu-vfio.log qpid h
  # Started without a monitor and paused (-S): it just sits there holding the device.
  qemu-system-x86_64 -machine q35 -accel tcg -nodefaults -display none -S \
    -device "vfio-pci,host=$vf" </dev/null >"$log" 2>&1 &
  qpid=$!
  holds() { h=$(holders); [ -n "$h" ] || ! kill -0 "$qpid" 2>/dev/null; }
  wait_for 120 holds || true
  if ! kill -0 "$qpid" 2>/dev/null; then
    echo "qemu exited early: $(tr '\n' ' ' <"$log")"; return 1
  fi
  kill "$qpid"; wait "$qpid" 2>/dev/null || true
  [ "$h" = "$qpid" ] || { echo "holders of /dev/vfio/$group: '${h}' (qemu pid $qpid) $(tr '\n' ' ' <"$log")"; return 1; }
  [ -z "$(holders)" ] || { echo "still held after qemu exit: $(holders)"; return 1; }
  echo "qemu pid $qpid held /dev/vfio/$group (/proc/$qpid/fd); released on exit"
}
check "in-guest qemu holds /dev/vfio/GROUP" qemu_holds

zero_removes() {
  local r; r=$(sysfs_write "$P/sriov_numvfs" 0)
  [ "$r" = OK ] || { echo "write 0 (VF on vfio-pci, unopened): $r"; return 1; }
  [ "$(count_virtfns)" = 0 ] || { echo "virtfn links left: $(count_virtfns)"; return 1; }
  local v; for v in "${vfs[@]}"; do [ ! -e "/sys/bus/pci/devices/$v" ] || { echo "$v still present"; return 1; }; done
  echo "write 0 with $vf on vfio-pci: OK; no virtfn* links, VF devices gone"
}
check "write 0 removes all virtfn links" zero_removes

summary
echo
echo "==== dmesg: igb / igbvf / vfio / pci-sriov ===="
dmesg | grep -E -i 'igb|vfio|sr-?iov|VFs' | tail -n 40 || true
exit $failed
