#!/usr/bin/env bash
# Guest script (run-lab.sh's `libvirt` boot): vfpool as a user installs it, under a real libvirtd
# 11.3 with its DEFAULT qemu.conf, on the real igb PF of the lab guest. Nothing here puts a
# device on QEMU's command line or talks to QEMU for vfpool: the domains only name vfpool's
# wrapper as their <emulator> and ask for VFs in their XML; everything else comes from vfpool
# (install.sh, its hooks, its wrapper, its QMP socket).
#
#   (a) a domain with <vfpool:hostdev pool=labvf mac=…>: starts; the nested QEMU's query-pci
#       (over vfpool's socket $VFPOOL_STATE_DIR/qemu/NAME/qmp.sock) shows vfpool-vf0 as
#       8086:10ca; QEMU holds the VF's /dev/vfio group; the PF reports the domain's MAC for the
#       VF; `virsh reset` keeps all that; `virsh managedsave` is refused (QEMU cannot migrate the
#       vfio VF) and the guest keeps running with its VF; `virsh destroy` gives the VF back as it
#       was (driver, MAC) and frees it;
#   (b) a domain with <interface type='network'> on the pci-passthrough-hybrid pool labhy:
#       the standby virtio-net has failover=on and the domain's MAC (qom-get); the primary
#       vfpool-vf0 is hidden (a guest without an OS never acks STANDBY), so QEMU is asked
#       whether it holds it as the standby's primary (a second primary is refused naming it);
#       the plan's VF carries the domain's MAC on the PF; destroy restores it;
#   (c) a libvirt hostdev network whose <metadata> is a vfpool pool (issue 10's finding): a guest
#       on it holds a VF through libvirt's own port; `virsh net-destroy` while it runs keeps the
#       VFs; `virsh destroy` of the guest (no port-deleted: the network is inactive); `virsh
#       net-start` and `net-destroy` again remove the VFs (sriov_numvfs 0, no port record left).
#
# Needs the guest booted with vfpool.switchroot=1 (libvirt's per-domain mount namespace fails
# inside a chroot). Writes $VFPOOL_LAB_OUT/libvirt.tsv (STATUS \t CHECK \t DETAIL; INFO lines
# are timings), read by lab-report.mjs. The vfpool it installs is the copy of the build that
# run-lab.sh took before the boot, which is this script's working directory (--cwd).
set -uo pipefail

# In a chroot, PID 1 (the initramfs's init) has another root than ours.
if [ "${VFPOOL_LAB_GUEST:-}" != 1 ] || [ -z "${VFPOOL_LAB_OUT:-}" ] || ! [ /proc/1/root -ef / ]; then
  echo "libvirt-guest: runs only in the lab guest switched into the shared root: VFPOOL_LAB_APPEND=vfpool.switchroot=1 bash test/lab/run-in-guest.sh $0 OUTDIR (run-lab.sh does this)" >&2
  exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$VFPOOL_LAB_OUT
snap=$PWD
tsv=$out/libvirt.tsv
: >"$tsv"
fails=0
now_ms() { date +%s%3N; }
row() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" | tee -a "$tsv"; [ "$1" != FAIL ] || fails=$((fails + 1)); }
info() { row INFO "$1" "$2"; }
# check NAME FUNC ARGS...: FUNC sets $why on failure; one row either way.
check() { local name=$1; shift; why=; if "$@"; then row PASS "$name" "$why"; else row FAIL "$name" "${why:-failed}"; fi; }
fatal() { row FAIL "$1" "$2"; finish; }

PREFIX=/run/vfplab/usr         # install.sh --prefix: the shared root is read-only
VFPOOL=$PREFIX/bin/vfpool
WRAPPER=$PREFIX/bin/vfpool-qemu
STATE=/run/vfpool              # vfpool's default state directory
URI=qemu:///system
PF=
v() { virsh -q -c "$URI" "$@"; }
# vp ARGS: the CLI with a hook's environment (settings from vfpool.conf only).
vp() { env -i LC_ALL=C HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin "$VFPOOL" "$@"; }

finish() {
  # Everything this script started goes, whatever failed: domains, pools, daemons.
  local d
  for d in labvf-a labhy-b labnet-c; do v destroy "$d" >/dev/null 2>&1; v undefine "$d" >/dev/null 2>&1; done
  [ -n "${net_started:-}" ] && v net-destroy labhy >/dev/null 2>&1
  [ -n "${labnet_started:-}" ] && v net-destroy labnet >/dev/null 2>&1
  [ -n "${pool_started:-}" ] && vp net-destroy labvf >/dev/null 2>&1
  stop_daemons
  cp /var/log/libvirt/libvirtd.log "$out/libvirtd.log" 2>/dev/null
  cp /var/log/libvirt/qemu/*.log "$out/" 2>/dev/null
  cp "$STATE/vfpool.log" "$out/vfpool.log" 2>/dev/null
  echo "libvirt-guest: $fails failed check(s)"
  [ "$fails" = 0 ] && exit 0 || exit 1
}

stop_daemons() {
  local f p
  for f in /run/libvirtd.pid /run/virtlogd.pid; do
    p=$(cat "$f" 2>/dev/null) || continue
    kill "$p" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
}

# ---- the guest as a Debian host: writable /etc, libvirt's dirs, cgroup2, modules ----------------
t_all=$(now_ms)
# After switch_root the initramfs's modprobe helper is gone: the kernel asks this one (tun, bridge).
echo /sbin/modprobe >/proc/sys/kernel/modprobe
modprobe -a tun bridge || fatal "guest setup" "modprobe tun bridge failed"
# A Debian host has cgroup2 here (systemd); libvirt then puts each domain behind a BPF device
# program, which is what vfpool's delivery must extend.
grep -q ' /sys/fs/cgroup ' /proc/mounts || mount -t cgroup2 none /sys/fs/cgroup || fatal "guest setup" "mount cgroup2"
mkdir -p /run/vfplab/etc /run/lock
# /etc is read-only (the host's over 9p): a private copy, so install.sh and libvirt can write.
cp -a /etc/. /run/vfplab/etc/ && mount --bind /run/vfplab/etc /etc || fatal "guest setup" "writable /etc"
for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do
  mount -t tmpfs -o mode=755 tmpfs "$d" || fatal "guest setup" "tmpfs on $d"
done
mkdir -p /var/lib/libvirt/qemu && chown libvirt-qemu:libvirt-qemu /var/lib/libvirt/qemu && chmod 0751 /var/lib/libvirt/qemu
# The point of the test: libvirt's qemu.conf as the package ships it (every line a comment).
default_conf() {
  local set; set=$(grep -Ev '^[[:space:]]*(#|$)' /etc/libvirt/qemu.conf | tr '\n' ' ') || true
  [ -z "$set" ] || { why="it sets: $set"; return 1; }
  why="no setting in /etc/libvirt/qemu.conf"
}
check "libvirt's qemu.conf is the default one" default_conf

PF=$(for n in /sys/class/net/*; do [ -r "$n/device/sriov_totalvfs" ] && basename "$n"; done | head -n1)
[ -n "$PF" ] || fatal "guest setup" "no SR-IOV PF in /sys/class/net"
ip link set "$PF" up
info "guest setup" "PF $PF ($(basename "$(readlink /sys/class/net/$PF/device/driver)")), $(( $(now_ms) - t_all )) ms"

# ---- install, pools, daemon --------------------------------------------------------------------
install_vfpool() {
  [ -f "$snap/install.sh" ] && [ -f "$snap/dist/bin/cli.mjs" ] || { why="no build at $snap (run-lab.sh runs this in its copy of the build: --cwd)"; return 1; }
  bash "$snap/install.sh" --prefix "$PREFIX" >"$out/install.out" 2>&1 || { why=$(tail -n 3 "$out/install.out"); return 1; }
  chmod 755 /run/vfplab "$PREFIX"
  [ -x "$WRAPPER" ] && [ -x "$VFPOOL" ] || { why="no $WRAPPER or $VFPOOL after install.sh"; return 1; }
  [ -e /etc/libvirt/hooks/qemu.d/vfpool ] && [ -e /etc/libvirt/hooks/network.d/vfpool ] || { why="hooks not linked in /etc/libvirt/hooks"; return 1; }
  why="PREFIX $PREFIX: $(readlink "$WRAPPER")"
}
check "install.sh: CLI, wrapper PREFIX/bin/vfpool-qemu, both hooks" install_vfpool
[ "$fails" = 0 ] || finish

cat >/etc/vfpool/networks/labvf.xml <<XML
<network><name>labvf</name><forward mode='hostdev' managed='yes'><pf dev='$PF'><vf num='3'/></pf></forward></network>
XML
# The hybrid pool takes the PF's VFs as they are (no count of its own) and is started by
# libvirt's network of the same name (below), through vfpool's network hook.
cat >/etc/vfpool/networks/labhy.xml <<XML
<network><name>labhy</name><forward mode='pci-passthrough-hybrid' managed='yes'><pf dev='$PF'/></forward></network>
XML

# vf_of ADDR: "INDEX" of the VF at PCI address ADDR on $PF.
vf_index() { local l; for l in /sys/class/net/$PF/device/virtfn*; do [ "$(basename "$(readlink "$l")")" = "$1" ] && { echo "${l##*virtfn}"; return 0; }; done; return 1; }
# pf_mac INDEX: the MAC the PF reports for VF INDEX (iproute2's "vf N link/ether MAC …" lines;
# no Node start: under nested TCG each one costs seconds). Debian's awk is mawk: no {5}.
pf_mac() {
  ip link show "$PF" | awk -v i="$1" '$1 == "vf" && $2 == i && !found {
    for (f = 3; f <= NF; f++) if ($f ~ /^[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f],?$/) { sub(/,$/, "", $f); print $f; found = 1; break } }
    END { if (!found) print "none" }'
}
driver_of() { basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null || echo none; }
group_of() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
# owner_vf DOMAIN: the VF address vfpool's status gives DOMAIN (empty if none).
owner_vf() {
  vp status --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const p of JSON.parse(s).pfs??[])for(const f of p.vfs??[])if(f.owner&&f.owner.domain===process.argv[1])console.log(f.address)})' "$1"
}
# snapshot_vfs: "ADDR driver MAC" for every VF of the PF, as the kernel reports them.
snapshot_vfs() { local l a; for l in /sys/class/net/$PF/device/virtfn*; do a=$(basename "$(readlink "$l")"); echo "$a $(driver_of "$a") $(pf_mac "${l##*virtfn}")"; done; }

start_pool() {
  pool_started=1
  vp net-start labvf >"$out/pool.out" 2>&1 || { why=$(tail -n 2 "$out/pool.out"); return 1; }
  local n; n=$(cat /sys/class/net/$PF/device/sriov_numvfs)
  [ "$n" = 3 ] || { why="sriov_numvfs is $n"; return 1; }
  local a; for a in $(snapshot_vfs | awk '{print $1}'); do [ "$(driver_of "$a")" = vfio-pci ] || { why="VF $a on $(driver_of "$a")"; return 1; }; done
  why="3 VFs on vfio-pci"
}
check "vfpool net-start labvf: 3 VFs of the igb PF on vfio-pci" start_pool
[ "$fails" = 0 ] || finish

start_daemons() {
  local t0; t0=$(now_ms)
  [ -f /run/virtlogd.pid ] || env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /usr/sbin/virtlogd -d
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /usr/sbin/libvirtd -d
  for _ in $(seq 600); do virsh -c "$URI" version >/dev/null 2>&1 && { why="up in $(( $(now_ms) - t0 )) ms"; return 0; }; sleep 0.2; done
  why="libvirtd did not answer in 120 s"; return 1
}
check "libvirtd starts (default qemu.conf, vfpool's hooks installed)" start_daemons
[ "$fails" = 0 ] || finish

# dom_xml NAME METADATA DEVICES: a TCG q35 domain, no disk, 128 MiB, QEMU = vfpool's wrapper.
dom_xml() {
  cat <<XML
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <metadata><vfpool:domain xmlns:vfpool='https://vfpool.dev/xmlns/1'>$2</vfpool:domain></metadata>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>$WRAPPER</emulator>
    <controller type='usb' model='none'/>
    $3
    <memballoon model='none'/>
  </devices>
</domain>
XML
}

# define_and_start NAME: defines the domain from $out/NAME.xml and starts it (timed_start);
# for a check: sets why.
define_and_start() {
  v define "$out/$1.xml" >/dev/null 2>"$out/define.err" || { why=$(cat "$out/define.err"); return 1; }
  timed_start "$1" || { why="virsh start: $start_err"; return 1; }
  why="virsh start took $start_ms ms"
}

# timed_start NAME: sets start_ms, start_err.
timed_start() {
  local t0; t0=$(now_ms)
  if v start "$1" >"$out/start-$1.out" 2>&1; then start_err=; else start_err=$(tr '\n' ' ' <"$out/start-$1.out"); fi
  start_ms=$(( $(now_ms) - t0 ))
  [ -z "$start_err" ]
}

qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null; }
holds_group() { ls -l /proc/"$1"/fd 2>/dev/null | grep -q "/dev/vfio/$2\$"; }
nobody_holds_group() { ! ls -l /proc/[0-9]*/fd 2>/dev/null | grep -q "/dev/vfio/$1\$"; }

# qmp_rows TAG MODE ARGS...: libvirt-qmp.mjs's rows into the table; a crash of it is a FAIL row.
qmp_rows() {
  local tag=$1 r st; shift
  r=$(node "$here/libvirt-qmp.mjs" "$@" 2>"$out/qmp-$tag.err"); st=$?
  [ -z "$r" ] || printf '%s\n' "$r" | tee -a "$tsv"
  fails=$(( fails + $(printf '%s\n' "$r" | grep -c '^FAIL') ))
  [ "$st" = 0 ] || row FAIL "($tag) QMP checks ran" "exit $st: $(head -c 300 "$out/qmp-$tag.err")"
}

# restored DOMAIN VF BEFORE: after destroy, DOMAIN's VF is free and exactly as before the start.
restored() {
  local dom=$1 vf=$2 before=$3 now
  [ -z "$(owner_vf "$dom")" ] || { why="vfpool status still gives $dom VF $(owner_vf "$dom")"; return 1; }
  now=$(snapshot_vfs | grep "^$vf ")
  [ "$now" = "$before" ] || { why="VF was '$before' before the start, is '$now' after destroy"; return 1; }
  nobody_holds_group "$(group_of "$vf")" || { why="/dev/vfio/$(group_of "$vf") still held"; return 1; }
  why="$now"
}

# ---- (a) a VF of the pool by metadata ----------------------------------------------------------
MAC_A=52:54:00:1a:b0:11
dom_xml labvf-a "<vfpool:hostdev pool='labvf' mac='$MAC_A'/>" '' >"$out/labvf-a.xml"
before_a=$(snapshot_vfs)
info "VFs before (a)" "$(echo "$before_a" | tr '\n' ';')"
start_a() { define_and_start labvf-a; }
check "(a) virsh start of a domain whose <emulator> is vfpool-qemu and whose metadata asks labvf for a VF" start_a
vf_a=$(owner_vf labvf-a)
if [ -n "$vf_a" ] && [ -n "$(qemu_pid labvf-a)" ]; then
  pid_a=$(qemu_pid labvf-a)
  info "(a) allocation" "VF $vf_a (VF index $(vf_index "$vf_a"), group $(group_of "$vf_a")), QEMU pid $pid_a"
  qmp_rows a vf "$STATE/qemu/labvf-a/qmp.sock" "$MAC_A" "$vf_a"
  check_holds() { holds_group "$pid_a" "$(group_of "$vf_a")" || { why="no /dev/vfio/$(group_of "$vf_a") among QEMU's fds"; return 1; }; why="pid $pid_a holds /dev/vfio/$(group_of "$vf_a")"; }
  check "(a) the nested QEMU holds the VF's /dev/vfio group" check_holds
  check_mac() { local m; m=$(pf_mac "$(vf_index "$vf_a")"); [ "$m" = "$MAC_A" ] || { why="PF reports $m for VF $vf_a"; return 1; }; why="$PF vf $(vf_index "$vf_a") mac $m"; }
  check "(a) the PF reports the domain's MAC for the VF" check_mac
  # A guest reset keeps QEMU (no hook runs); a save cannot take a VF: QEMU refuses to migrate a
  # vfio device that has no migration support (igb's VFs have none), the guest keeps running and
  # keeps its VF, and libvirt runs no hook.
  reset_keeps() {
    v reset labvf-a >/dev/null 2>"$out/reset.err" || { why="virsh reset: $(cat "$out/reset.err")"; return 1; }
    [ "$(qemu_pid labvf-a)" = "$pid_a" ] && holds_group "$pid_a" "$(group_of "$vf_a")" || { why="QEMU pid '$(qemu_pid labvf-a)' (was $pid_a) does not hold /dev/vfio/$(group_of "$vf_a")"; return 1; }
    [ "$(owner_vf labvf-a)" = "$vf_a" ] || { why="vfpool status gives labvf-a '$(owner_vf labvf-a)'"; return 1; }
    why="same QEMU pid $pid_a, VF $vf_a still held"
  }
  check "(a) virsh reset: same QEMU, it still holds the VF, vfpool still gives it to labvf-a" reset_keeps
  save_refused() {
    if v managedsave labvf-a >"$out/msave.out" 2>&1; then why="virsh managedsave succeeded; labvf-a is $(v domstate labvf-a)"; v start labvf-a >/dev/null 2>&1; return 1; fi
    [ "$(v domstate labvf-a)" = running ] || { why="labvf-a is '$(v domstate labvf-a)' after the refused managedsave"; return 1; }
    [ "$(qemu_pid labvf-a)" = "$pid_a" ] && holds_group "$pid_a" "$(group_of "$vf_a")" || { why="QEMU pid '$(qemu_pid labvf-a)' (was $pid_a) does not hold /dev/vfio/$(group_of "$vf_a")"; return 1; }
    [ "$(owner_vf labvf-a)" = "$vf_a" ] || { why="vfpool status gives labvf-a '$(owner_vf labvf-a)'"; return 1; }
    why="virsh: $(tail -n 1 "$out/msave.out" | tail -c 300 | tr '\t' ' ')"
  }
  check "(a) virsh managedsave is refused (QEMU cannot save the vfio VF): still running, VF still held" save_refused
  destroy_a() { v destroy labvf-a >/dev/null 2>"$out/destroy.err" || { why=$(cat "$out/destroy.err"); return 1; }; restored labvf-a "$vf_a" "$(echo "$before_a" | grep "^$vf_a ")"; }
  check "(a) virsh destroy: the VF is free again with its driver and MAC as before" destroy_a
else
  row FAIL "(a) the domain holds a VF and runs" "vfpool status gives labvf-a '${vf_a:-nothing}', QEMU pid '$(qemu_pid labvf-a)'"
fi
v destroy labvf-a >/dev/null 2>&1; v undefine labvf-a >/dev/null 2>&1

# ---- (b) a pci-passthrough-hybrid interface ---------------------------------------------------
# libvirt needs a network of the pool's name for <source network='labhy'>: a bridge network on a
# bridge made here (libvirt gives the guest its virtio-net on a tap); its start runs vfpool's
# network hook, which starts the vfpool pool of that name.
ip link add vfpbr0 type bridge 2>/dev/null; ip link set vfpbr0 up
printf "<network><name>labhy</name><forward mode='bridge'/><bridge name='vfpbr0'/></network>\n" >"$out/labhy-net.xml"
net_start() {
  v net-define "$out/labhy-net.xml" >/dev/null 2>"$out/net.err" || { why=$(cat "$out/net.err"); return 1; }
  net_started=1
  v net-start labhy >/dev/null 2>"$out/net.err" || { why=$(cat "$out/net.err"); return 1; }
  vp status --json 2>/dev/null | grep -q '"labhy"' || { why="vfpool status does not list pool labhy"; return 1; }
  why="libvirt network labhy active; vfpool pool labhy listed"
}
check "(b) virsh net-start labhy starts the vfpool hybrid pool through the network hook" net_start

MAC_B=52:54:00:1a:b0:22
dom_xml labhy-b '' "<interface type='network'><source network='labhy'/><mac address='$MAC_B'/><model type='virtio'/></interface>" >"$out/labhy-b.xml"
before_b=$(snapshot_vfs)
start_b() { define_and_start labhy-b; }
check "(b) virsh start of a domain with an <interface> on the hybrid pool" start_b
vf_b=$(owner_vf labhy-b)
if [ -n "$vf_b" ] && [ -n "$(qemu_pid labhy-b)" ]; then
  info "(b) allocation" "VF $vf_b (VF index $(vf_index "$vf_b")), QEMU pid $(qemu_pid labhy-b)"
  plan_b() {
    local p=$STATE/qemu/labhy-b/plan.json got
    [ -f "$p" ] || { why="no $p"; return 1; }
    got=$(node -e 'const p=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));const v=p.vfs[0]??{};console.log([p.vfs.length,v.id,v.host,v.mac,v.failoverStandbyMac,v.emulatedModel].join(" "))' "$p")
    [ "$got" = "1 vfpool-vf0 $vf_b $MAC_B $MAC_B " ] || { why="plan.json: '$got', expected '1 vfpool-vf0 $vf_b $MAC_B $MAC_B ' (count id host mac standbyMac emulatedModel)"; return 1; }
    why="vfpool-vf0 = vfio-pci host $vf_b, mac $MAC_B, standby by mac $MAC_B"
  }
  check "(b) the plan pairs the VF (vfio-pci, the domain's MAC) with the standby of that MAC" plan_b
  qmp_rows b hybrid "$STATE/qemu/labhy-b/qmp.sock" "$MAC_B"
  check_mac_b() { local m; m=$(pf_mac "$(vf_index "$vf_b")"); [ "$m" = "$MAC_B" ] || { why="PF reports $m for VF $vf_b"; return 1; }; why="$PF vf $(vf_index "$vf_b") mac $m"; }
  check "(b) the PF reports the interface's MAC for the primary VF" check_mac_b
  destroy_b() { v destroy labhy-b >/dev/null 2>"$out/destroy.err" || { why=$(cat "$out/destroy.err"); return 1; }; restored labhy-b "$vf_b" "$(echo "$before_b" | grep "^$vf_b ")"; }
  check "(b) virsh destroy: the VF is free again with its driver and MAC as before" destroy_b
else
  row FAIL "(b) the domain holds a VF and runs" "vfpool status gives labhy-b '${vf_b:-nothing}', QEMU pid '$(qemu_pid labhy-b)'"
fi
v destroy labhy-b >/dev/null 2>&1; v undefine labhy-b >/dev/null 2>&1

# ---- teardown as checks: the pools go, the PF is as it booted ----------------------------------
teardown() {
  v net-destroy labhy >/dev/null 2>"$out/net.err" || { why="net-destroy labhy: $(cat "$out/net.err")"; return 1; }
  net_started=
  vp net-destroy labvf >"$out/pool.out" 2>&1 || { why="vfpool net-destroy labvf: $(tail -n 2 "$out/pool.out")"; return 1; }
  pool_started=
  local n; n=$(cat /sys/class/net/$PF/device/sriov_numvfs)
  [ "$n" = 0 ] || { why="sriov_numvfs is $n after both pools stopped"; return 1; }
  why="sriov_numvfs 0"
}
check "pools stopped (libvirt net-destroy labhy, vfpool net-destroy labvf): the PF has no VFs" teardown

# ---- (c) issue 10's finding: a libvirt hostdev network carrying the pool in its <metadata> -------
# A guest holds a VF of it; `virsh net-destroy` while the guest runs (vfpool keeps the VFs);
# `virsh destroy` of the guest (libvirt sends no port-deleted for an inactive network);
# `virsh net-start` and `net-destroy` again must remove the VFs: the port record of a guest that
# no longer runs must not count as "in use" (src/pool/owners.ts). libvirt itself gives the guest
# the VF (its own hostdev network); vfpool only makes the VFs and judges who uses them.
numvfs() { cat "/sys/class/net/$PF/device/sriov_numvfs"; }
# state_ports: the port records in vfpool's state, "network/domain/VF" each.
state_ports() { node -e 'const s=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log((s.ports??[]).map(p=>`${p.network}/${p.domain}/${p.vfAddr}`).join(" "))' "$STATE/state.json" 2>/dev/null; }
# pool_active NAME: "true"/"false"/"absent", as vfpool status lists the pool.
pool_active() { vp status --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const p=(JSON.parse(s).pools??[]).find(p=>p.name===process.argv[1]);console.log(p?String(p.active):"absent")})' "$1"; }
cat >"$out/labnet-net.xml" <<XML
<network><name>labnet</name>
  <forward mode='hostdev' managed='yes'><pf dev='$PF'/></forward>
  <metadata><vfpool:pool xmlns:vfpool='https://vfpool.dev/xmlns/1'><vfpool:pf dev='$PF'><vfpool:vf num='3'/></vfpool:pf></vfpool:pool></metadata>
</network>
XML
MAC_C=52:54:00:1a:b0:33
cat >"$out/labnet-c.xml" <<XML
<domain type='qemu'>
  <name>labnet-c</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <emulator>$WRAPPER</emulator>
    <controller type='usb' model='none'/>
    <interface type='network'><source network='labnet'/><mac address='$MAC_C'/></interface>
    <memballoon model='none'/>
  </devices>
</domain>
XML
labnet_start() {
  v net-define "$out/labnet-net.xml" >/dev/null 2>"$out/net.err" || { why=$(cat "$out/net.err"); return 1; }
  labnet_started=1
  v net-start labnet >/dev/null 2>"$out/net.err" || { why=$(cat "$out/net.err"); return 1; }
  [ "$(numvfs)" = 3 ] || { why="sriov_numvfs is $(numvfs)"; return 1; }
  [ "$(pool_active labnet)" = true ] || { why="vfpool status lists pool labnet as $(pool_active labnet)"; return 1; }
  why="sriov_numvfs 3, vfpool pool labnet active"
}
check "(c) virsh net-start of a hostdev network whose <metadata> is a vfpool pool creates its 3 VFs" labnet_start
start_c() {
  define_and_start labnet-c || return 1
  vf_c=$(owner_vf labnet-c)
  [ -n "$vf_c" ] || { why="started in $start_ms ms, but vfpool status gives labnet-c no VF (ports: $(state_ports))"; return 1; }
  holds_group "$(qemu_pid labnet-c)" "$(group_of "$vf_c")" || { why="QEMU pid $(qemu_pid labnet-c) does not hold /dev/vfio/$(group_of "$vf_c")"; return 1; }
  why="virsh start took $start_ms ms; VF $vf_c, owner labnet-c through libvirt (port record $(state_ports)); QEMU holds /dev/vfio/$(group_of "$vf_c")"
}
check "(c) virsh start of a guest with an <interface> on it: libvirt's port, owned in vfpool status" start_c
net_destroy_kept() {
  v net-destroy labnet >/dev/null 2>"$out/net.err" || { why="net-destroy: $(cat "$out/net.err")"; return 1; }
  [ "$(numvfs)" = 3 ] || { why="sriov_numvfs is $(numvfs) with the guest running"; return 1; }
  [ "$(owner_vf labnet-c)" = "$vf_c" ] || { why="vfpool status gives labnet-c '$(owner_vf labnet-c)', expected $vf_c"; return 1; }
  why="sriov_numvfs 3, $vf_c still owned by labnet-c; pool labnet $(pool_active labnet | sed 's/^false$/inactive/;s/^true$/active/')"
}
check "(c) virsh net-destroy while the guest runs: vfpool keeps the VFs" net_destroy_kept
destroy_c() {
  v destroy labnet-c >/dev/null 2>"$out/destroy.err" || { why=$(cat "$out/destroy.err"); return 1; }
  [ -z "$(qemu_pid labnet-c)" ] || { why="libvirt still has a pid file for labnet-c"; return 1; }
  [ "$(numvfs)" = 3 ] || { why="sriov_numvfs is $(numvfs)"; return 1; }
  why="guest gone; port records left: '$(state_ports)'"
}
check "(c) virsh destroy of the guest (no port-deleted: the network is inactive)" destroy_c
restart_stop_labnet() {
  v net-start labnet >/dev/null 2>"$out/net.err" || { why="net-start again: $(cat "$out/net.err")"; return 1; }
  local n; n=$(numvfs)
  v net-destroy labnet >/dev/null 2>"$out/net.err" || { why="net-destroy again: $(cat "$out/net.err")"; return 1; }
  labnet_started=
  [ "$(numvfs)" = 0 ] || { why="sriov_numvfs is $(numvfs) after net-destroy (was $n after net-start); port records: '$(state_ports)'; $(grep -i 'keeps its' "$STATE/vfpool.log" | tail -n 1)"; return 1; }
  [ -z "$(state_ports)" ] || { why="port records left: $(state_ports)"; return 1; }
  [ "$(pool_active labnet)" != true ] || { why="vfpool status lists pool labnet as active"; return 1; }
  why="sriov_numvfs $n after net-start, 0 after net-destroy; no port record; pool labnet $(pool_active labnet)"
}
check "(c) virsh net-start and net-destroy again: the VFs are removed (the stale port record pins nothing)" restart_stop_labnet
info "wall time in the guest" "$(( $(now_ms) - t_all )) ms"
finish
