#!/usr/bin/env bash
# Proof (c): two real libvirt 11.3 daemons on one machine (test/libvirt/libvirtd-pair.sh: each in
# its own mount namespace, own host UUID, on 127.0.0.1), `virsh migrate --live` of a plain TCG
# domain there and back, and vfpool's `migrate begin` hook on the destination: a request naming
# a source-only device is mapped to its pool, or refused with vfpool's sentence while the source
# keeps running. Root only. The lead wires vfpool's prepare/release hooks into the same pair.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PAIR=$repo/test/libvirt/libvirtd-pair.sh
SRC=vfmig-src DST=vfmig-dst
SRC_PORT=${VFPOOL_MIG_SRC_PORT:-16520} DST_PORT=${VFPOOL_MIG_DST_PORT:-16521}
cleanup() { bash "$PAIR" purge $SRC >/dev/null 2>&1; bash "$PAIR" purge $DST >/dev/null 2>&1; finish; }
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { [ "${CI:-}" = true ] && setup_fail "needs root"; echo "SKIP: needs root (libvirtd); under CI=true this is a failure"; echo "0 passed, 0 failed"; trap - EXIT; exit 0; }
need libvirtd virtlogd virsh qemu-system-x86_64 unshare node
[ -f "$repo/dist/bin/cli.mjs" ] || setup_fail "run npm run build first"
work=$(mktemp -d /tmp/vfpool-mig-c.XXXXXX)
A=qemu+tcp://127.0.0.1:$SRC_PORT/system B=qemu+tcp://127.0.0.1:$DST_PORT/system
MIGOPTS=(--listen-address 127.0.0.1 --migrateuri tcp://127.0.0.1)

bash "$PAIR" purge $SRC >/dev/null 2>&1; bash "$PAIR" purge $DST >/dev/null 2>&1
# The destination's qemu hook: vfpool's `migrate begin` (XML on stdin, XML to use on stdout,
# non-zero cancels), nothing else (prepare/release are the lead's wiring). Installed BEFORE start.
mkdir -p "/tmp/vfpool-libvirtd-$DST"
cp -a /etc/libvirt "/tmp/vfpool-libvirtd-$DST/etc"
mkdir -p "/tmp/vfpool-libvirtd-$DST/etc/hooks"
cat >"/tmp/vfpool-libvirtd-$DST/etc/hooks/qemu" <<HOOK
#!/bin/sh
[ "\$2" = migrate ] || exit 0
exec node "$repo/dist/bin/cli.mjs" migrate begin --xml -
HOOK
chmod 0755 "/tmp/vfpool-libvirtd-$DST/etc/hooks/qemu"

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

dom_xml() { # dom_xml NAME [METADATA]
  cat <<XML
<domain type='qemu'><name>$1</name><memory unit='KiB'>65536</memory><vcpu>1</vcpu>
  ${2:+<metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'>$2</vfpool:domain></metadata>}
  <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/></devices></domain>
XML
}
state_on() { virsh -q -c "$1" domstate "$2" 2>/dev/null | head -n1; }

dom_xml vfpool-mig-plain >"$work/plain.xml"
create() { virsh -q -c $A create "$work/plain.xml" >/dev/null 2>"$work/err" || { why="$(cat "$work/err")"; return 1; }; }
check "a plain TCG domain starts on the source" create
private_run() { [ ! -e /run/libvirt/qemu/vfpool-mig-plain.pid ] || { why="the instance's state is in the host's /run"; return 1; }; }
check "the instance's runtime state stays in its namespace (no pid file in the host's /run)" private_run
mig() { # mig FROM TO NAME
  local t0; t0=$(now_ms)
  virsh -q -c "$1" migrate --live "$3" "$2" "${MIGOPTS[@]}" >"$work/mig.out" 2>&1 || { why="$(cat "$work/mig.out")"; return 1; }
  echo "     virsh migrate --live $3: $(( $(now_ms) - t0 )) ms"
  [ "$(state_on "$2" "$3")" = running ] || { why="on the destination: '$(state_on "$2" "$3")'"; return 1; }
  [ -z "$(state_on "$1" "$3")" ] || { why="still on the source: '$(state_on "$1" "$3")'"; return 1; }
}
check "virsh migrate --live: source -> destination" mig $A $B vfpool-mig-plain
check "virsh migrate --live: and back" mig $B $A vfpool-mig-plain

# vfpool's migrate begin hook on the destination.
dom_xml vfpool-mig-mapped "<vfpool:hostdev pool='sriov-pool' address='0000:01:10.0' mac='52:54:00:9a:00:11'/>" >"$work/mapped.xml"
mapped() { virsh -q -c $A create "$work/mapped.xml" >/dev/null 2>"$work/err" || { why="create: $(cat "$work/err")"; return 1; }
  mig $A $B vfpool-mig-mapped || return 1
  local x; x=$(virsh -c $B dumpxml vfpool-mig-mapped)
  [[ $x == *"pool='sriov-pool'"* || $x == *'pool="sriov-pool"'* ]] && [[ $x != *0000:01:10.0* ]] || { why="destination XML: $(grep -o '<vfpool:hostdev[^>]*>' <<<"$x")"; return 1; }; }
check "migrate begin hook: a source PCI address is dropped for its pool (destination XML)" mapped
dom_xml vfpool-mig-refused "<vfpool:hostdev netdev='eth3' mac='52:54:00:9a:00:12'/>" >"$work/refused.xml"
refused() { virsh -q -c $A create "$work/refused.xml" >/dev/null 2>"$work/err" || { why="create: $(cat "$work/err")"; return 1; }
  if virsh -q -c $A migrate --live vfpool-mig-refused $B "${MIGOPTS[@]}" >"$work/mig.out" 2>&1; then why="migration was not refused"; return 1; fi
  grep -q "netdev='eth3', a device of the source host, which the destination cannot hold" "$work/mig.out" || { why="virsh said: $(cat "$work/mig.out")"; return 1; }
  echo "     $(tr '\n' ' ' <"$work/mig.out" | cut -c1-220)"
  [ "$(state_on $A vfpool-mig-refused)" = running ] || { why="source state: '$(state_on $A vfpool-mig-refused)'"; return 1; }
  [ -z "$(state_on $B vfpool-mig-refused)" ] || { why="destination has it: '$(state_on $B vfpool-mig-refused)'"; return 1; }; }
check "migrate begin hook refuses netdev= with vfpool's sentence; the source keeps running" refused
stop_pair() { bash "$PAIR" stop $SRC >/dev/null && bash "$PAIR" stop $DST >/dev/null || { why="stop failed"; return 1; }
  ! bash "$PAIR" status $SRC >/dev/null 2>&1 && ! bash "$PAIR" status $DST >/dev/null 2>&1 || { why="an instance still answers"; return 1; }
  ! pgrep -f "guest=vfpool-mig-" >/dev/null || { why="a QEMU outlived its daemon: $(pgrep -af 'guest=vfpool-mig-')"; return 1; }; }
check "both instances stop; no QEMU of theirs is left" stop_pair
