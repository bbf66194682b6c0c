#!/usr/bin/env bash
# Proof (c): two real libvirt 11.3 daemons on one machine (test/libvirt/libvirtd-pair.sh: each in
# its own mount namespace, own host UUID, on 127.0.0.1), each with vfpool's hooks (qemu and
# network) on a simulated host of its own, and vfpool's wrapper as the domains' <emulator> on
# both. Checked: `virsh migrate --live` of a plain TCG domain there and back; of a domain with a
# hybrid interface (pci-passthrough-hybrid pool: a failover pair, its primary hidden by QEMU, no
# guest OS): the destination reserves a VF with the same MAC and re-adds the primary, the
# source's VF is restored and freed (`release end migrated`); `vfpool migrate` of a plain
# `vfpool:hostdev`: device_del on the source, virsh migrate, the destination plugs a VF with the
# same MAC, the source's is freed; the destination's `migrate begin` hook maps a source-only
# device to its pool or refuses it; refusals at the destination (begin, exhausted pool, for
# virsh and for `vfpool migrate`) leave the source untouched: running, VF held, device in the
# guest. Root only.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PAIR=$repo/test/libvirt/libvirtd-pair.sh
SRC=vfmig-src DST=vfmig-dst
SRC_PORT=${VFPOOL_MIG_SRC_PORT:-16520} DST_PORT=${VFPOOL_MIG_DST_PORT:-16521}
BRIDGE=vfpmigbr0
made_bridge=0
cleanup() {
  hang_report
  bash "$PAIR" purge $SRC >/dev/null 2>&1; bash "$PAIR" purge $DST >/dev/null 2>&1
  [ $made_bridge = 1 ] && ip link del "$BRIDGE" 2>/dev/null
  finish
}
trap cleanup EXIT
# Every virsh call is bounded (VFPOOL_MIG_CALL_TIMEOUT seconds, default 180; the longest, a first
# migration, takes ~8 s): libvirt waits without end for a hook or a QEMU that does not answer, and
# a call that hangs must fail its row, naming itself, not run the proof into CI's own limit. What
# ran and what the daemons logged at the first such call is shown at the end (hang_report).
call_timeout=${VFPOOL_MIG_CALL_TIMEOUT:-180}
virsh() {
  local rc; timeout --foreground --kill-after=10 "$call_timeout" virsh "$@"; rc=$?
  if [ $rc = 124 ] || [ $rc = 137 ]; then
    echo "virsh $*: no answer within ${call_timeout}s (VFPOOL_MIG_CALL_TIMEOUT)" >&2
    [ -e "$work/hang.txt" ] || hang_snapshot "virsh $*" >"$work/hang.txt" 2>&1
  fi
  return $rc
}
hang_snapshot() {
  echo "no answer within ${call_timeout}s: $*"; echo "processes then:"
  ps -eo pid,ppid,etimes,stat,args --forest | grep -E 'libvirtd|virtlogd|qemu|node|virsh|hooks' | grep -v grep | cut -c1-220
  local l; for l in /tmp/vfpool-libvirtd-$SRC/log/libvirtd.log /tmp/vfpool-libvirtd-$DST/log/libvirtd.log "$work"/src/run/vfpool.log "$work"/dst/run/vfpool.log; do
    [ -s "$l" ] && { echo "--- $l"; tail -n 20 "$l"; }
  done
}
hang_report() { [ -n "$work" ] && [ -s "$work/hang.txt" ] && sed 's/^/     !! /' "$work/hang.txt"; }
[ "$(id -u)" = 0 ] || { [ "${CI:-}" = true ] && setup_fail "needs root"; echo "SKIP: needs root (libvirtd); under CI=true this is a failure"; echo "0 passed, 0 failed"; trap - EXIT; exit 0; }
need libvirtd virtlogd virsh qemu-system-x86_64 unshare node ip
[ -f "$repo/dist/bin/cli.mjs" ] && [ -f "$repo/dist/test/migrate/qmp-events.js" ] || setup_fail "run npm run build first"
work=$(mktemp -d /tmp/vfpool-mig-c.XXXXXX)
# QEMU runs as libvirt-qemu and its wrapper reads the host's vfpool.conf and plan from here.
chmod 0755 "$work"
A=qemu+tcp://127.0.0.1:$SRC_PORT/system B=qemu+tcp://127.0.0.1:$DST_PORT/system
MIGOPTS=(--listen-address 127.0.0.1 --migrateuri tcp://127.0.0.1)
# The same <emulator> path on both hosts, as /usr/local/bin/vfpool-qemu would be: each daemon's
# /etc/libvirt is its own (a bind mount in its namespace), so the path leads to that host's wrapper.
EMULATOR=/etc/libvirt/vfpool-qemu

bash "$PAIR" purge $SRC >/dev/null 2>&1; bash "$PAIR" purge $DST >/dev/null 2>&1
ip link show "$BRIDGE" >/dev/null 2>&1 && setup_fail "bridge $BRIDGE exists already (a run left it? ip link del $BRIDGE)"
ip link add "$BRIDGE" type bridge && made_bridge=1 && ip link set "$BRIDGE" up || setup_fail "cannot create bridge $BRIDGE"

# host_setup H INSTANCE SRIOV_VFS: a simulated host (eth1 for the hostdev pool sriov-pool with
# SRIOV_VFS VFs, eth2 for the hybrid pool hy-pool), its vfpool.conf (what /etc/vfpool/vfpool.conf
# is to an installed vfpool), and the instance's /etc/libvirt with vfpool's hooks and wrapper,
# each a one-line script that points VFPOOL_CONFIG_DIR at that host's conf (libvirt clears the
# environment; an installed vfpool reads /etc/vfpool). Installed before the daemon starts.
host_setup() {
  local h=$1 inst=$2 n=$3 d="/tmp/vfpool-libvirtd-$2"
  mkdir -p "$work/$h/etc" && chmod 0755 "$work/$h" "$work/$h/etc"
  echo '{"pfs":[{"name":"eth1","totalVfs":4,"address":"0000:01:00.0"},{"name":"eth2","totalVfs":4,"address":"0000:02:00.0"}]}' >"$work/$h/host.json"
  # VFPOOL_SIM_DELIVERY=hotplug: the stand-ins reach QEMU the way real VFs do under libvirt
  # (empty root port from the wrapper, device_add at `started`), not on the command line.
  printf 'VFPOOL_HOST=sim:%s\nVFPOOL_STATE_DIR=%s\nVFPOOL_SIM_VF_DEVICE=e1000e\nVFPOOL_SIM_DELIVERY=hotplug\nVFPOOL_QEMU=%s\n' \
    "$work/$h/host.json" "$work/$h/run" "$(command -v qemu-system-x86_64)" >"$work/$h/etc/vfpool.conf"
  chmod 0644 "$work/$h/etc/vfpool.conf"
  echo "<network><name>sriov-pool</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='$n'/></pf></forward></network>" >"$work/$h/pool.xml"
  echo "<network><name>hy-pool</name><forward mode='pci-passthrough-hybrid' managed='yes'><pf dev='eth2'><vf num='2'/></pf></forward></network>" >"$work/$h/hy.xml"
  vfpool_at "$h" net-define "$work/$h/pool.xml" >/dev/null && vfpool_at "$h" net-start sriov-pool >/dev/null \
    && vfpool_at "$h" net-define "$work/$h/hy.xml" >/dev/null || return 1
  mkdir -p "$d" && cp -a /etc/libvirt "$d/etc" && mkdir -p "$d/etc/hooks" || return 1
  local kind
  for kind in qemu network; do
    printf '#!/bin/sh\nVFPOOL_CONFIG_DIR=%s exec "%s" "$@"\n' "$work/$h/etc" "$repo/hooks/$kind" >"$d/etc/hooks/$kind"
  done
  printf '#!/bin/sh\nVFPOOL_CONFIG_DIR=%s exec "%s" "$@"\n' "$work/$h/etc" "$repo/qemu-args/vfpool-qemu" >"$d/etc/vfpool-qemu"
  chmod 0755 "$d/etc/hooks/qemu" "$d/etc/hooks/network" "$d/etc/vfpool-qemu"
}
host_setup src $SRC 2 || setup_fail "the source's simulated host and hooks"
host_setup dst $DST 1 || setup_fail "the destination's simulated host and hooks"

start_pair() {
  bash "$PAIR" start $SRC "$SRC_PORT" >"$work/start-src.log" 2>&1 || { why="$(tail -n 3 "$work/start-src.log")"; return 1; }
  bash "$PAIR" start $DST "$DST_PORT" >"$work/start-dst.log" 2>&1 || { why="$(tail -n 3 "$work/start-dst.log")"; return 1; }
  echo "     $(cat "$work/start-src.log")"; echo "     $(cat "$work/start-dst.log")"
}
check "two libvirtd instances start, each in its own mount namespace, on 127.0.0.1" start_pair
[ "$failed" = 0 ] || exit 1
uuids_differ() { local a b; a=$(virsh -c $A capabilities | grep -m1 '<uuid>'); b=$(virsh -c $B capabilities | grep -m1 '<uuid>')
  [ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ] || { why="host UUIDs: '$a' vs '$b'"; return 1; }; }
check "each instance has its own host UUID" uuids_differ

# ---- helpers -------------------------------------------------------------------------------------
# No guest OS runs here, and QEMU completes device_del without one only for a device hot-added
# into a slot whose power is off: native PCIe hotplug (q35's default is ACPI hotplug, whose
# eject only a guest answers), so every domain turns ACPI hotplug off on its root ports.
dom_xml() { # dom_xml NAME [METADATA] [DEVICES]
  cat <<XML
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>$1</name><memory unit='KiB'>65536</memory><vcpu>1</vcpu>
  ${2:+<metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'>$2</vfpool:domain></metadata>}
  <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
  <devices><emulator>$EMULATOR</emulator>${3:-}<memballoon model='none'/></devices>
  <qemu:commandline><qemu:arg value='-global'/><qemu:arg value='ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off'/></qemu:commandline></domain>
XML
}
state_on() { virsh -q -c "$1" domstate "$2" 2>/dev/null | head -n1; }
# status_js H EXPR [ARG]: EXPR (JavaScript; j = `vfpool status --json` of host H, a = ARG) printed.
status_js() {
  vfpool_at "$1" status --json | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{const j=JSON.parse(s),a=process.argv[2],vfs=j.pfs.flatMap(p=>p.vfs);console.log(String(eval(process.argv[1])))})' "$2" "${3:-}"
}
held_by() { status_js "$1" 'vfs.filter(v=>v.owner&&v.owner.domain===a).map(v=>v.mac).join(",")' "$2"; }  # held_by H DOMAIN: MACs
vf_of() { status_js "$1" 'vfs.filter(v=>v.owner&&v.owner.domain===a).map(v=>v.address).join(",")' "$2"; } # vf_of H DOMAIN: addresses
vf_state() { status_js "$1" '(v=>v?`${v.owner?v.owner.domain:"free"} ${v.mac}`:"none")(vfs.find(v=>v.address===a))' "$2"; }  # vf_state H ADDR: "OWNER|free MAC"
sock() { echo "$work/$1/run/qemu/$2/qmp.sock"; }
# on_dst DOMAIN COMMAND [ARGS-JSON]: QMP through the destination's libvirt (what an operator has there).
on_dst() { local m; m=$(virsh -c $B qemu-monitor-command "$1" "{\"execute\":\"$2\"${3:+,\"arguments\":$3}}") || return 1
  node -e 'const m=JSON.parse(process.argv[1]);if(m.error){console.error(m.error.desc);process.exit(1)}console.log(JSON.stringify(m.return))' "$m"; }
peripheral_has() { [[ $1 == *"\"name\":\"$2\""* ]]; }
mig() { # mig FROM TO NAME
  local t0; t0=$(now_ms)
  virsh -q -c "$1" migrate --live "$3" "$2" "${MIGOPTS[@]}" >"$work/mig.out" 2>&1 || { why="$(cat "$work/mig.out")"; return 1; }
  echo "     virsh migrate --live $3: $(( $(now_ms) - t0 )) ms"
  [ "$(state_on "$2" "$3")" = running ] || { why="on the destination: '$(state_on "$2" "$3")'"; return 1; }
  [ -z "$(state_on "$1" "$3")" ] || { why="still on the source: '$(state_on "$1" "$3")'"; return 1; }
}
create_on() { virsh -q -c "$1" create "$2" >/dev/null 2>"$work/err" || { why="create $(basename "$2"): $(cat "$work/err")"; return 1; }; }
# src_untouched DOMAIN MAC: still running on the source, its VF held with MAC, the device in the guest.
src_untouched() {
  [ "$(state_on $A "$1")" = running ] || { why="source state: '$(state_on $A "$1")'"; return 1; }
  [ -z "$(state_on $B "$1")" ] || { why="destination has it: '$(state_on $B "$1")'"; return 1; }
  [ "$(held_by src "$1")" = "$2" ] || { why="the source holds '$(held_by src "$1")' for $1, expected $2"; return 1; }
  local m; m=$(qmp "$(sock src "$1")" qom-get '{"path":"/machine/peripheral/vfpool-vf0","property":"mac"}' 2>&1)
  [ "$m" = "\"$2\"" ] || { why="the source guest's vfpool-vf0: $m"; return 1; }
}

# ---- a domain without vfpool: the pair migrates ----------------------------------------------------
dom_xml vfpool-mig-plain >"$work/plain.xml"
check "a plain TCG domain starts on the source (its <emulator> the wrapper, which adds nothing)" create_on $A "$work/plain.xml"
private_run() { [ ! -e /run/libvirt/qemu/vfpool-mig-plain.pid ] || { why="the instance's state is in the host's /run"; return 1; }; }
check "the instance's runtime state stays in its namespace (no pid file in the host's /run)" private_run
check "virsh migrate --live: source -> destination" mig $A $B vfpool-mig-plain
check "virsh migrate --live: and back" mig $B $A vfpool-mig-plain
virsh -q -c $A destroy vfpool-mig-plain >/dev/null 2>&1

# ---- a hybrid interface: plain `virsh migrate --live`, no vfpool step -------------------------------
# libvirt needs a network of the pool's name on each host: a bridge network; its net-start runs
# vfpool's network hook, which starts the vfpool pool hy-pool of that host.
echo "<network><name>hy-pool</name><forward mode='bridge'/><bridge name='$BRIDGE'/></network>" >"$work/hy-net.xml"
hy_nets() { local u h
  for u in $A $B; do
    virsh -q -c $u net-define "$work/hy-net.xml" >/dev/null 2>"$work/err" && virsh -q -c $u net-start hy-pool >/dev/null 2>>"$work/err" || { why="$u: $(cat "$work/err")"; return 1; }
  done
  for h in src dst; do [ "$(status_js $h 'j.pools.find(p=>p.name==="hy-pool").active')" = true ] || { why="$h: vfpool pool hy-pool not active after libvirt's net-start"; return 1; }; done; }
check "virsh net-start hy-pool on both hosts starts vfpool's hybrid pool there (network hook)" hy_nets
MAC_HY=52:54:00:9a:01:01
dom_xml vfpool-mig-hy '' "<interface type='network'><source network='hy-pool'/><mac address='$MAC_HY'/><model type='virtio'/></interface>" >"$work/hy.xml"
hy_src() { HY_BEFORE=$(status_js src 'vfs.map(v=>v.address+"="+v.mac).join(" ")')
  create_on $A "$work/hy.xml" || return 1
  [ "$(held_by src vfpool-mig-hy)" = $MAC_HY ] || { why="the source holds '$(held_by src vfpool-mig-hy)'"; return 1; }
  HY_SRC_VF=$(vf_of src vfpool-mig-hy)
  local f p; f=$(qmp "$(sock src vfpool-mig-hy)" qom-get '{"path":"/machine/peripheral/net0","property":"failover"}' 2>&1)
  [ "$f" = true ] || { why="net0 failover: $f"; return 1; }
  p=$(qmp "$(sock src vfpool-mig-hy)" qom-list '{"path":"/machine/peripheral"}')
  ! peripheral_has "$p" vfpool-vf0 || { why="vfpool-vf0 is realized (no guest acked STANDBY, so QEMU should hide it)"; return 1; }
  peripheral_has "$p" vfpool-rp0 || { why="no root port vfpool-rp0 (the wrapper did not run?)"; return 1; }
  echo "     source: VF $HY_SRC_VF holds $MAC_HY; net0 failover=on; vfpool-vf0 hidden behind it (not in /machine/peripheral)"; }
check "hybrid domain on the source: VF with the interface's MAC, standby net0 failover=on, primary hidden (wrapper + started hook)" hy_src
# probe_primary TARGET DOMAIN: QEMU refuses a second primary for net0, naming the one it holds.
probe_primary() {
  local out want="Cannot attach more than one primary device to 'net0': 'vfpool-vf0' and 'vfpool-probe'"
  if [ "$1" = src ]; then out=$(qmp "$(sock src "$2")" device_add '{"driver":"e1000e","id":"vfpool-probe","failover_pair_id":"net0","mac":"52:54:00:9a:01:ff"}' 2>&1)
  else out=$(on_dst "$2" device_add '{"driver":"e1000e","id":"vfpool-probe","failover_pair_id":"net0","mac":"52:54:00:9a:01:ff"}' 2>&1); fi
  [[ $out == *"$want"* ]] || { why="probe device_add: '$out' (expected: $want)"; return 1; }; }
check "source QEMU holds vfpool-vf0 as net0's (hidden) primary (a second primary is refused naming it)" probe_primary src vfpool-mig-hy
hy_migrate() {
  local ev="$work/hy-events.out" i
  : >"$ev"
  node "$repo/dist/test/migrate/qmp-events.js" "$(sock src vfpool-mig-hy)" 300 >"$ev" 2>&1 & pids+=($!)
  for i in $(seq 300); do grep -q '^listening' "$ev" && break; sleep 0.1; done
  grep -q '^listening' "$ev" || { why="event listener: $(cat "$ev")"; return 1; }
  mig $A $B vfpool-mig-hy || return 1
  for i in $(seq 300); do grep -q '^closed' "$ev" && break; sleep 0.1; done
  grep -q '^closed' "$ev" || { why="the source QEMU did not close vfpool's socket: $(tail -n 3 "$ev")"; return 1; }
  grep -q '"MIGRATION","data":{"status":"completed"}' "$ev" || { why="no MIGRATION completed event on the source: $(grep -o '"event":"[A-Z_]*"' "$ev" | sort | uniq -c | tr '\n' ' ')"; return 1; }
  ! grep -q 'UNPLUG_PRIMARY\|DEVICE_DELETED' "$ev" || { why="QEMU unplugged something: $(grep 'UNPLUG_PRIMARY\|DEVICE_DELETED' "$ev")"; return 1; }
  echo "     source QEMU events: $(grep -o '"event":"[A-Z_]*"' "$ev" | cut -d'"' -f4 | sort | uniq -c | awk '{printf "%s x%s ", $2, $1}')"; }
check "virsh migrate --live of the hybrid domain: completes; the un-negotiated (hidden) primary needs no unplug (no UNPLUG_PRIMARY, no DEVICE_DELETED)" hy_migrate
hy_dst() {
  [ "$(held_by dst vfpool-mig-hy)" = $MAC_HY ] || { why="the destination holds '$(held_by dst vfpool-mig-hy)' for vfpool-mig-hy"; return 1; }
  local m; m=$(on_dst vfpool-mig-hy qom-get '{"path":"/machine/peripheral/net0","property":"mac"}') || { why="qom-get net0 mac on the destination failed"; return 1; }
  [ "$m" = "\"$MAC_HY\"" ] || { why="destination net0 mac $m"; return 1; }
  local i; for i in $(seq 150); do grep -q "migrate vfpool-mig-hy: device_add vfpool-vf0 (e1000e, mac $MAC_HY)" "$work/dst/run/vfpool.log" && break; sleep 0.2; done
  grep -q "migrate vfpool-mig-hy: device_add vfpool-vf0 (e1000e, mac $MAC_HY)" "$work/dst/run/vfpool.log" || { why="the destination's confirm did not re-add the primary: $(grep -i 'vfpool-mig-hy' "$work/dst/run/vfpool.log" | tail -n 4)"; return 1; }; }
check "destination: a hy-pool VF reserved with $MAC_HY, net0 carries it, confirm re-added the primary with it (vfpool.log)" hy_dst
check "destination QEMU holds vfpool-vf0 as net0's primary again (hidden until a guest acks)" probe_primary dst vfpool-mig-hy
hy_src_freed() {
  local s want; s=$(vf_state src "$HY_SRC_VF"); want=$(tr ' ' '\n' <<<"$HY_BEFORE" | sed -n "s/^$HY_SRC_VF=//p")
  [ "$s" = "free $want" ] || { why="source VF $HY_SRC_VF: '$s', expected 'free $want' (as before the domain started)"; return 1; }
  grep -q "qemu-hook vfpool-mig-hy release end migrated" "$work/src/run/vfpool.log" || { why="no 'release end migrated' on the source"; return 1; }
  [ ! -e "$work/src/run/qemu/vfpool-mig-hy/plan.json" ] || { why="the source's plan is still there"; return 1; }; }
check "source: release end migrated restored (MAC as before) and freed the VF, plan removed" hy_src_freed

# ---- a plain vfpool:hostdev: `vfpool migrate DOMAIN DEST_URI [-- virsh options]` ----------------------
MAC_VF=52:54:00:9a:02:01
qom_mac_src() { qmp "$(sock src "$1")" qom-get '{"path":"/machine/peripheral/vfpool-vf0","property":"mac"}' 2>&1; }
dom_xml vfpool-mig-vf "<vfpool:hostdev pool='sriov-pool' mac='$MAC_VF'/>" >"$work/vf.xml"
vf_src() { VF_BEFORE=$(status_js src 'vfs.map(v=>v.address+"="+v.mac).join(" ")')
  create_on $A "$work/vf.xml" || return 1
  [ "$(held_by src vfpool-mig-vf)" = $MAC_VF ] || { why="the source holds '$(held_by src vfpool-mig-vf)'"; return 1; }
  VF_SRC_VF=$(vf_of src vfpool-mig-vf)
  local m; m=$(qom_mac_src vfpool-mig-vf)
  [ "$m" = "\"$MAC_VF\"" ] || { why="source vfpool-vf0 mac: $m"; return 1; }
  echo "     source: VF $VF_SRC_VF holds $MAC_VF; vfpool-vf0 (e1000e) in the guest with it"; }
check "plain vfpool:hostdev on the source: VF held with its MAC, started hook device_add'ed vfpool-vf0 carrying it" vf_src
vf_migrate() {
  local t0 rc; t0=$(now_ms)
  # vfpool runs virsh on this host's libvirt: LIBVIRT_DEFAULT_URI says which (this host's daemon is
  # not on the default socket: its /run is private).
  LIBVIRT_DEFAULT_URI=$A vfpool_at src migrate vfpool-mig-vf "$B" -- "${MIGOPTS[@]}" >"$work/vfmig.out" 2>&1; rc=$?
  [ $rc = 0 ] || { why="exit $rc: $(tail -n 5 "$work/vfmig.out" | tr '\n' ' ')"; return 1; }
  echo "     vfpool migrate: $(( $(now_ms) - t0 )) ms"; sed 's/^/     | /' "$work/vfmig.out"
  grep -q "device_del vfpool-vf0 on the source QEMU" "$work/vfmig.out" || { why="no device_del step in: $(cat "$work/vfmig.out")"; return 1; }
  grep -q "vfpool-vf0 plugged on $B" "$work/vfmig.out" || { why="vfpool did not see vfpool-vf0 on the destination"; return 1; }
  [ "$(state_on $B vfpool-mig-vf)" = running ] || { why="on the destination: '$(state_on $B vfpool-mig-vf)'"; return 1; }
  [ -z "$(state_on $A vfpool-mig-vf)" ] || { why="still on the source: '$(state_on $A vfpool-mig-vf)'"; return 1; }; }
check "vfpool migrate vfpool-mig-vf DEST_URI: device_del on the source, virsh migrate --live, the VF arrives on the destination" vf_migrate
vf_dst() {
  [ "$(held_by dst vfpool-mig-vf)" = $MAC_VF ] || { why="the destination holds '$(held_by dst vfpool-mig-vf)'"; return 1; }
  local m; m=$(on_dst vfpool-mig-vf qom-get '{"path":"/machine/peripheral/vfpool-vf0","property":"mac"}' 2>&1)
  [ "$m" = "\"$MAC_VF\"" ] || { why="destination vfpool-vf0 mac: $m"; return 1; }
  m=$(on_dst vfpool-mig-vf query-status); [[ $m == *'"status":"running"'* ]] || { why="destination guest: $m"; return 1; }; }
check "destination: a VF held with $MAC_VF, the guest runs with vfpool-vf0 carrying it (qemu-monitor-command)" vf_dst
vf_src_freed() {
  local s want; s=$(vf_state src "$VF_SRC_VF"); want=$(tr ' ' '\n' <<<"$VF_BEFORE" | sed -n "s/^$VF_SRC_VF=//p")
  [ "$s" = "free $want" ] || { why="source VF $VF_SRC_VF: '$s', expected 'free $want'"; return 1; }
  [ ! -e "$work/src/run/migrate/vfpool-mig-vf.json" ] || { why="the source's migration record is left"; return 1; }
  [ ! -e "$work/dst/run/migrate/vfpool-mig-vf.json" ] || { why="the destination's migration record is left: $(cat "$work/dst/run/migrate/vfpool-mig-vf.json")"; return 1; }; }
check "source: VF restored (MAC as before) and freed; no migration record left on either host" vf_src_freed
vf_release() { virsh -q -c $B destroy vfpool-mig-vf >/dev/null 2>"$work/err" || { why="destroy: $(cat "$work/err")"; return 1; }
  [ -z "$(held_by dst vfpool-mig-vf)" ] || { why="still held after release: $(held_by dst vfpool-mig-vf)"; return 1; }; }
check "destination release hook: destroying the migrated domain frees its VF" vf_release

# ---- the destination's migrate begin hook, and refusals there ------------------------------------
# virsh migrate --live of NAME (created on the source from FILE) must fail, virsh saying TEXT; the
# source keeps running with its VF held (MAC) and the device in the guest.
migrate_refused() { local name=$1 file=$2 text=$3 mac=$4
  create_on $A "$file" || return 1
  if virsh -q -c $A migrate --live "$name" $B "${MIGOPTS[@]}" >"$work/mig.out" 2>&1; then why="virsh migrate of $name succeeded"; return 1; fi
  grep -qF -- "$text" "$work/mig.out" || { why="virsh said: $(cat "$work/mig.out")"; return 1; }
  echo "     $(tr '\n' ' ' <"$work/mig.out" | cut -c1-260)"
  src_untouched "$name" "$mac"; }
dom_xml vfpool-mig-mapped "<vfpool:hostdev pool='sriov-pool' address='0000:01:02.1' mac='52:54:00:9a:00:11'/>" >"$work/mapped.xml"
virsh_plain_vf() { migrate_refused vfpool-mig-mapped "$work/mapped.xml" "load of migration failed" 52:54:00:9a:00:11 || return 1
  local i; for i in $(seq 150); do [ -z "$(held_by dst vfpool-mig-mapped)" ] && [ ! -e "$work/dst/run/migrate/vfpool-mig-mapped.json" ] && break; sleep 0.2; done
  [ -z "$(held_by dst vfpool-mig-mapped)" ] || { why="the destination still holds $(held_by dst vfpool-mig-mapped)"; return 1; }
  [ ! -e "$work/dst/run/migrate/vfpool-mig-mapped.json" ] || { why="the destination's migration record is left: $(tr -d ' \n' <"$work/dst/run/migrate/vfpool-mig-mapped.json")"; return 1; }; }
check "plain virsh migrate with a plain VF in the guest fails (QEMU's stream has a device the destination left off); source untouched, destination holds nothing" virsh_plain_vf
mapped() {
  LIBVIRT_DEFAULT_URI=$A vfpool_at src migrate vfpool-mig-mapped "$B" -- "${MIGOPTS[@]}" >"$work/vfmig.out" 2>&1 || { why="vfpool migrate: $(tail -n 5 "$work/vfmig.out" | tr '\n' ' ')"; return 1; }
  [ "$(state_on $B vfpool-mig-mapped)" = running ] && [ -z "$(state_on $A vfpool-mig-mapped)" ] || { why="source '$(state_on $A vfpool-mig-mapped)', destination '$(state_on $B vfpool-mig-mapped)'"; return 1; }
  local x; x=$(virsh -c $B dumpxml vfpool-mig-mapped)
  [[ $x == *"pool='sriov-pool'"* || $x == *'pool="sriov-pool"'* ]] && [[ $x != *0000:01:02.1* ]] || { why="destination XML: $(grep -o '<vfpool:hostdev[^>]*>' <<<"$x")"; return 1; }; }
check "vfpool migrate, and the migrate begin hook: a source PCI address is dropped for its pool (destination XML)" mapped
reserved_dst() { local m; m=$(held_by dst vfpool-mig-mapped); [ "$m" = 52:54:00:9a:00:11 ] || { why="destination holds '$m' for vfpool-mig-mapped"; return 1; }
  [ -z "$(held_by src vfpool-mig-mapped)" ] || { why="the source still holds $(held_by src vfpool-mig-mapped)"; return 1; }; }
check "destination prepare hook: the arriving domain holds a VF with the source's MAC; the source's is freed" reserved_dst
# The incoming QEMU's argv (from /proc: its pid file is in the destination's private /run).
incoming_wrapped() {
  local p a; p=$(pgrep -f "guest=vfpool-mig-mapped" | head -n 1)
  [ -n "$p" ] || { why="no QEMU of vfpool-mig-mapped"; return 1; }
  a=$(tr '\0' '\n' <"/proc/$p/cmdline")
  grep -qx -- -incoming <<<"$a" || { why="QEMU $p has no -incoming"; return 1; }
  grep -qx -- "unix:$work/dst/run/qemu/vfpool-mig-mapped/qmp.sock,server=on,wait=off" <<<"$a" && grep -q 'vfpool-rp0' <<<"$a" || { why="QEMU $p lacks the wrapper's QMP socket or root port"; return 1; }
  ! grep -q '"id":"vfpool-vf0"\|id=vfpool-vf0' <<<"$a" || { why="vfpool-vf0 is on the incoming command line"; return 1; }; }
check "destination QEMU started through the wrapper with -incoming: vfpool's QMP socket and root port, no VF on its command line" incoming_wrapped
armed() { grep -q "started (incoming migration): vfpool-vf0 left off; confirm --wait-incoming runs as pid" "$work/dst/run/vfpool.log" || { why="$(grep -i 'started' "$work/dst/run/vfpool.log" | tail -n 3)"; return 1; }
  local m i; for i in $(seq 60); do m=$(on_dst vfpool-mig-mapped qom-get '{"path":"/machine/peripheral/vfpool-vf0","property":"mac"}' 2>&1) && break; sleep 0.5; done
  [ "$m" = '"52:54:00:9a:00:11"' ] || { why="vfpool-vf0 on the destination after 30 s: $m"; return 1; }; }
check "destination started hook: the VF left off the incoming QEMU, plugged by the armed confirm once it arrived (same MAC)" armed
dom_xml vfpool-mig-refused "<vfpool:hostdev address='0000:01:02.1' mac='52:54:00:9a:00:12'/>" >"$work/refused.xml"
refused() { migrate_refused vfpool-mig-refused "$work/refused.xml" "address='0000:01:02.1', a device of the source host, which the destination cannot hold" 52:54:00:9a:00:12; }
check "migrate begin hook refuses a pool-less address= with vfpool's sentence; the source runs on, VF held, device in the guest" refused
dom_xml vfpool-mig-full "<vfpool:hostdev pool='sriov-pool' mac='52:54:00:9a:00:13'/>" >"$work/full.xml"
exhausted() { migrate_refused vfpool-mig-full "$work/full.xml" "pool 'sriov-pool' is exhausted" 52:54:00:9a:00:13 || return 1
  [ -z "$(held_by dst vfpool-mig-full)" ] || { why="destination holds $(held_by dst vfpool-mig-full)"; return 1; }; }
check "destination pool exhausted (virsh migrate): prepare refuses; the source runs on, VF held, device in the guest; nothing held there" exhausted
exhausted_vfpool() {
  local rc
  LIBVIRT_DEFAULT_URI=$A vfpool_at src migrate vfpool-mig-full "$B" -- "${MIGOPTS[@]}" >"$work/vfmig.out" 2>&1; rc=$?
  [ $rc = 1 ] || { why="exit $rc (expected 1): $(tail -n 5 "$work/vfmig.out" | tr '\n' ' ')"; return 1; }
  sed 's/^/     | /' "$work/vfmig.out" | cut -c1-240
  grep -q "device_del vfpool-vf0 on the source QEMU" "$work/vfmig.out" || { why="vfpool did not unplug first: $(cat "$work/vfmig.out")"; return 1; }
  grep -q "device_add vfpool-vf0" "$work/vfmig.out" || { why="vfpool did not plug it back: $(cat "$work/vfmig.out")"; return 1; }
  grep -q "pool 'sriov-pool' is exhausted" "$work/vfmig.out" || { why="the refusal's reason is not shown: $(cat "$work/vfmig.out")"; return 1; }
  src_untouched vfpool-mig-full 52:54:00:9a:00:13 || return 1
  [ ! -e "$work/src/run/migrate/vfpool-mig-full.json" ] || { why="the source's migration record is left"; return 1; }
  [ -z "$(held_by dst vfpool-mig-full)" ] || { why="destination holds $(held_by dst vfpool-mig-full)"; return 1; }; }
check "destination pool exhausted (vfpool migrate): exit 1 with the reason; the VF unplugged is plugged back, same MAC; nothing held there" exhausted_vfpool
released() { virsh -q -c $B destroy vfpool-mig-mapped >/dev/null 2>"$work/err" || { why="destroy: $(cat "$work/err")"; return 1; }
  [ -z "$(held_by dst vfpool-mig-mapped)" ] || { why="still held after release: $(held_by dst vfpool-mig-mapped)"; return 1; }; }
check "destination release hook: destroying the domain frees its VF" released
stop_pair() { bash "$PAIR" stop $SRC >/dev/null && bash "$PAIR" stop $DST >/dev/null || { why="stop failed"; return 1; }
  ! bash "$PAIR" status $SRC >/dev/null 2>&1 && ! bash "$PAIR" status $DST >/dev/null 2>&1 || { why="an instance still answers"; return 1; }
  ! pgrep -f "guest=vfpool-mig-" >/dev/null || { why="a QEMU outlived its daemon: $(pgrep -af 'guest=vfpool-mig-')"; return 1; }; }
check "both instances stop; no QEMU of theirs is left" stop_pair
