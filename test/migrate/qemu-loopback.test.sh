#!/usr/bin/env bash
# Proof (a): vfpool's four migration stages between two real QEMU 10.0 processes on loopback,
# each on its own simulated vfpool host (src/, dst/), with an emulated e1000e standing in for
# the VF on vfpool's root port (VFPOOL_SIM_VF_DEVICE=e1000e).
#
# Why the source's NIC is hot-plugged (delivery 'hotplug', as the `started` hook does) and the
# machine uses native PCIe hotplug (-global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off):
# no guest OS runs here, and QEMU 10.0 only completes device_del without one when the slot's
# power is off. With q35's default ACPI hotplug, and for a device on the command line (slot
# powered at reset), device_del waits for the guest's eject forever (measured: no
# DEVICE_DELETED in 8 s, both cases); a root port empty at reset is powered off, a device
# hot-added into it stays unpowered without a guest, and device_del then unplugs it at once.
# The guest-acknowledged path is proof (b) (a real kernel).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap finish EXIT
need qemu-system-x86_64 node
[ -f "$repo/dist/bin/cli.mjs" ] || setup_fail "run npm run build first"
work=$(mktemp -d /tmp/vfpool-mig-a.XXXXXX)
QEMU=${VFPOOL_QEMU:-qemu-system-x86_64}
MAC1=52:54:00:9a:00:01 MAC2=52:54:00:9a:00:02

for h in src dst; do
  mkdir -p "$work/$h"
  echo '{"pfs":[{"name":"eth1","totalVfs":7,"address":"0000:01:00.0","vfDriver":"igbvf","offset":128,"stride":2}]}' >"$work/$h/host.json"
  cat >"$work/$h/pool.xml" <<XML
<network><name>sriov-pool</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='3'/></pf></forward></network>
XML
  vfpool_at $h net-define "$work/$h/pool.xml" >/dev/null && vfpool_at $h net-start sriov-pool >/dev/null || setup_fail "pool on $h"
done

domain_xml() { cat <<XML
<domain type='qemu'><name>$1</name>
  <metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:hostdev pool='sriov-pool' mac='$2' vlan='100'/></vfpool:domain></metadata></domain>
XML
}

base_argv() { # the command line a person (or libvirt) gives; vfpool's args are added to it
  printf '%s\n' -name "guest=$1" -machine q35 -accel tcg -m 128 -nodefaults -display none -monitor none -serial none \
    -global ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off
}

start_qemu() { # start_qemu HOST DOMAIN [EXTRA...]: base argv + what vfpool adds (`vfpool qemu-args`)
  local h=$1 d=$2; shift 2
  local -a argv added
  mapfile -t argv < <(base_argv "$d")
  mapfile -t added < <(vfpool_at $h qemu-args "$d" --json | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{for(const a of JSON.parse(s).args)console.log(a)})')
  [ ${#added[@]} -gt 0 ] || { why="vfpool qemu-args $d added nothing"; return 1; }
  "$QEMU" "${argv[@]}" "${added[@]}" "$@" >"$work/$h-$d-qemu.log" 2>&1 &
  pids+=($!)
  eval "${h}_${d}_pid=$!"
  local sock=$work/$h/run/qemu/$d/qmp.sock
  for _ in $(seq 100); do [ -S "$sock" ] && return 0; sleep 0.1; done
  why="no QMP socket $sock"; return 1
}
sock() { echo "$work/$1/run/qemu/$2/qmp.sock"; }

qom_mac() { qmp "$(sock $1 $2)" qom-get '{"path":"/machine/peripheral/vfpool-vf0","property":"mac"}' 2>/dev/null | tr -d '"'; }
has_vf() { qmp "$(sock $1 $2)" qom-list '{"path":"/machine/peripheral"}' | grep -q '"name":"vfpool-vf0"'; }
pci_has_e1000e() { local id; id=$(pci_id "$(sock $1 $2)" vfpool-vf0); [ "$id" = 8086:10d3 ] || { why="query-pci: vfpool-vf0 is '$id'"; return 1; }; }
held_by() { vfpool_at $1 status --json | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{const j=JSON.parse(s);const v=j.pfs.flatMap(p=>p.vfs).filter(v=>v.owner&&v.owner.domain===process.argv[1]);console.log(v.map(x=>x.mac).join(","))})' "$2"; }

# ---- success: vm1 moves from src to dst --------------------------------------------------
vfpool_at src prepare --delivery hotplug --xml <(domain_xml vm1 $MAC1) >/dev/null || setup_fail "prepare vm1 on src"
check "source QEMU starts with vfpool's generated arguments" start_qemu src vm1
# SeaBIOS numbers the buses behind the root port; wait until it has run.
sleep 2
plug_src() { vfpool_at src plug "$1" >"$work/plug-$1.log" 2>&1 || { why="exit $?: $(tr '\n' ' ' <"$work/plug-$1.log")"; return 1; }; }
check "source: vfpool plug adds the e1000e standing in for the VF (what the started hook does)" plug_src vm1
check_mac() { local m; m=$(qom_mac "$1" "$2"); [ "$m" = "$3" ] || { why="qom-get mac on $1 is '$m', expected $3"; return 1; }; }
check "source: qom-get mac = $MAC1" check_mac src vm1 $MAC1
check "source: query-pci shows the e1000e (8086:10d3)" pci_has_e1000e src vm1

begin_out() { vfpool_at src migrate begin vm1 >"$work/desc.json" || { why="exit $?"; return 1; }
  ! grep -q '0000:' "$work/desc.json" || { why="description names a PCI address: $(cat "$work/desc.json")"; return 1; }
  grep -q "\"pool\": \"sriov-pool\"" "$work/desc.json" && grep -q "$MAC1" "$work/desc.json" || { why="no pool/MAC in $(cat "$work/desc.json")"; return 1; }; }
check "begin: the description carries pool and MAC, no source PCI address" begin_out
prep() { vfpool_at dst migrate prepare --description "$work/desc.json" >"$work/prep.log" 2>&1 || { why="$(cat "$work/prep.log")"; return 1; }
  [ "$(held_by dst vm1)" = "$MAC1" ] || { why="dst holds '$(held_by dst vm1)' for vm1"; return 1; }; }
check "prepare: destination reserves a VF with the same MAC" prep
prep_again() { vfpool_at dst migrate prepare --description "$work/desc.json" >"$work/prep2.log" 2>&1 || { why="exit $?: $(cat "$work/prep2.log")"; return 1; }; [ "$(held_by dst vm1)" = "$MAC1" ] || { why="second prepare: held '$(held_by dst vm1)'"; return 1; }; }
check "prepare is idempotent (re-run: still one VF, same MAC)" prep_again
PORT=$(free_port)
check "destination QEMU starts with -incoming tcp:127.0.0.1:$PORT" start_qemu dst vm1 -incoming "tcp:127.0.0.1:$PORT"
no_vf_dst() { ! has_vf dst vm1 || { why="vfpool-vf0 already on the incoming QEMU"; return 1; }; qmp "$(sock dst vm1)" qom-list '{"path":"/machine/peripheral"}' | grep -q vfpool-rp0 || { why="no root port vfpool-rp0"; return 1; }; }
check "destination starts without the plain VF, its root port reserved" no_vf_dst
# The destination confirms by itself once the incoming migration ends (what its `started` hook
# arms under libvirt): started before the source performs.
vfpool_at dst migrate confirm vm1 --role destination --wait-incoming 120 >"$work/cd.log" 2>&1 &
waiter=$!
perform() { vfpool_at src migrate perform vm1 --to "tcp:127.0.0.1:$PORT" >"$work/perform.log" 2>&1 || { why="$(tr '\n' ' ' <"$work/perform.log")"; return 1; }
  grep -q 'device_del vfpool-vf0' "$work/perform.log" && grep -q 'migrated to' "$work/perform.log" || { why="$(tr '\n' ' ' <"$work/perform.log")"; return 1; }; }
check "perform: device_del + DEVICE_DELETED on the source, QMP migrate completes" perform
echo "     $(grep 'migrated to' "$work/perform.log")"
src_gone() { ! has_vf src vm1 || { why="vfpool-vf0 still on the source"; return 1; }; }
check "source: the VF left the guest before its state moved" src_gone
dst_status() { local s; s=$(qmp "$(sock dst vm1)" query-status); [[ $s == *'"status":"running"'* ]] || { why="$s"; return 1; }; }
check "destination QEMU runs after the migration" dst_status
confirm_dst() { wait "$waiter" || { why="exit $?: $(cat "$work/cd.log")"; return 1; }; grep -q 'device_add vfpool-vf0' "$work/cd.log" || { why="$(cat "$work/cd.log")"; return 1; }; }
check "confirm --wait-incoming (destination): saw the migration end, device_add of the generated device" confirm_dst
check "destination: qom-get mac = $MAC1 (same MAC)" check_mac dst vm1 $MAC1
check "destination: query-pci shows the e1000e" pci_has_e1000e dst vm1
confirm_src() { vfpool_at src migrate confirm vm1 --role source >"$work/cs.log" 2>&1 || { why="$(cat "$work/cs.log")"; return 1; }
  [ -z "$(held_by src vm1)" ] || { why="src still holds $(held_by src vm1)"; return 1; }; }
check "confirm (source): its VF restored and freed" confirm_src
again() { vfpool_at src migrate confirm vm1 --role source >/dev/null && vfpool_at dst migrate confirm vm1 --role destination >/dev/null \
  && check_mac dst vm1 $MAC1 && [ "$(held_by dst vm1)" = "$MAC1" ] && [ -z "$(held_by src vm1)" ] || { why="${why:-re-run changed something}"; return 1; }; }
check "confirm re-run on both sides: exit 0, nothing changes" again

# ---- failure: the destination dies; vm2 stays on src with its VF --------------------------
vfpool_at src prepare --delivery hotplug --xml <(domain_xml vm2 $MAC2) >/dev/null || setup_fail "prepare vm2 on src"
start_qemu src vm2 || setup_fail "source QEMU vm2: $why"
sleep 2
plug_src vm2 || setup_fail "plug vm2: $why"
vfpool_at src migrate begin vm2 >"$work/desc2.json" || setup_fail "begin vm2"
vfpool_at dst migrate prepare --description "$work/desc2.json" >/dev/null || setup_fail "prepare vm2 on dst"
PORT2=$(free_port)
start_qemu dst vm2 -incoming "tcp:127.0.0.1:$PORT2" || setup_fail "dst QEMU vm2: $why"
kill -9 "$dst_vm2_pid"; wait "$dst_vm2_pid" 2>/dev/null
fails() { vfpool_at src migrate perform vm2 --to "tcp:127.0.0.1:$PORT2" >"$work/perform2.log" 2>&1; local rc=$?
  [ $rc = 1 ] || { why="exit $rc, expected 1: $(tr '\n' ' ' <"$work/perform2.log")"; return 1; }
  grep -q 'device_add vfpool-vf0' "$work/perform2.log" || { why="no re-plug: $(tr '\n' ' ' <"$work/perform2.log")"; return 1; }; }
check "perform to a killed destination fails (exit 1) and plugs the VF back" fails
echo "     $(grep -m1 'vfpool:' "$work/perform2.log")"
check "source after the failure: qom-get mac = $MAC2" check_mac src vm2 $MAC2
src_runs() { local s; s=$(qmp "$(sock src vm2)" query-status); [[ $s == *'"status":"running"'* ]] || { why="$s"; return 1; }; [ "$(held_by src vm2)" = "$MAC2" ] || { why="src holds '$(held_by src vm2)'"; return 1; }; }
check "source keeps running and keeps its VF reserved" src_runs
undo_dst() { vfpool_at dst migrate confirm vm2 --role destination --failed >"$work/cf.log" 2>&1 || { why="$(cat "$work/cf.log")"; return 1; }
  [ -z "$(held_by dst vm2)" ] || { why="dst still holds $(held_by dst vm2)"; return 1; }
  [ ! -e "$work/dst/run/qemu/vm2/plan.json" ] || { why="dst plan of vm2 left"; return 1; }; }
check "confirm --failed (destination): nothing reserved, no plan left" undo_dst

# ---- crash: perform killed between device_del and its record, then the migration given up ----
# (test/migrate/crash-perform.test.ts kills perform at every point against a QMP stand-in; this
# is the point where the real QEMU's state and the record part: the VF is out of the guest.)
killed() { VFPOOL_TEST_CRASH_AT='migrate-perform:ran#1' vfpool_at src migrate perform vm2 >"$work/perform3.log" 2>&1; local rc=$?
  [ $rc = 137 ] || { why="exit $rc, expected 137 (SIGKILL): $(tr '\n' ' ' <"$work/perform3.log")"; return 1; }
  ! has_vf src vm2 || { why="vfpool-vf0 is still in the guest: the kill came before device_del"; return 1; }; }
check "perform killed (SIGKILL) after device_del, before recording it: the VF is out of the guest" killed
given_up() { vfpool_at src reconcile >"$work/rec3.log" 2>&1 || { why="reconcile: $(tr '\n' ' ' <"$work/rec3.log")"; return 1; }
  vfpool_at src migrate confirm vm2 --role source --failed >"$work/cf3.log" 2>&1 || { why="confirm --failed: $(tr '\n' ' ' <"$work/cf3.log")"; return 1; }
  check_mac src vm2 $MAC2 || return 1
  [ "$(held_by src vm2)" = "$MAC2" ] || { why="src holds '$(held_by src vm2)' for vm2"; return 1; }
  [ ! -e "$work/src/run/migrate/vm2.json" ] || { why="the migration record of vm2 is left"; return 1; }; }
check "reconcile, then confirm --role source --failed (the migration given up): the VF is back in the guest with its MAC" given_up
