#!/usr/bin/env bash
# The lifecycles a libvirt administrator drives, under a real libvirt 11.3 daemon, on a
# simulated SR-IOV host, with the guests' <emulator> being vfpool's wrapper (as a real host has it).
#
#   npm ci && npm run build && sudo bash test/libvirt/lifecycle.test.sh
#
# Same harness as guest.test.sh (lib.sh): installs vfpool, points /etc/vfpool/vfpool.conf at a
# simulated host (eth1, eth2, eth3) and a private state directory, defines three vfpool pools
# (vfplpa on eth1 and vfplpb on eth2, 2 VFs each; vfplhy, pci-passthrough-hybrid, 2 VFs on eth3),
# starts libvirtd by hand, and drives TCG q35 guests (no disk, 64 MiB, QEMU = vfpool-qemu).
# Everything is undone on exit, on failure too.
#
# What is checked (libvirt 11.3's hook calls, as docs/hooks.rst lists them and as seen here):
# - a guest with VFs of two pools; reset, suspend, resume and reboot keep QEMU, so libvirt runs
#   no hook and nothing is released;
# - `virsh net-start` of a network whose pool would change the count of a PF another active pool
#   draws from (a guest on it): refused with vfpool's sentence, nothing changed; a libvirt network
#   named like a pool vfpool net-start runs, whose start vfpool refuses: the `stopped end` libvirt
#   follows the failure with leaves that pool running;
# - two transient guests (`virsh create`) racing for the last VF of a pool: one gets it, the
#   other fails with vfpool's sentence and holds nothing;
# - a guest asking two pools where one is exhausted: nothing allocated in the other either;
# - QEMU killed (SIGKILL) behind libvirt's back: `release end crashed` restores the VFs;
# - QEMU killed while libvirtd is down: libvirt runs `release end crashed` when it comes back;
# - libvirtd killed during a start, after vfpool's prepare and before QEMU (a second qemu hook
#   holds the start): after its restart, `virsh start` frees what that start left and succeeds;
# - with hotplug delivery, libvirtd killed at `started` before vfpool's ran: the restarted
#   daemon's `reconnect` plugs the VFs QEMU lacks;
# - `virsh define` of a new MAC while the guest runs: it keeps its VFs until destroy, whose release
#   (by name) restores them; `virsh domrename`: the new name starts with the new MAC;
# - a hybrid pool carried by a bridge network of its name: an <interface> attached live gets no
#   VF, so its port-created is refused with vfpool's sentence and the guest keeps its NICs; a
#   libvirtd restart (port-created again for every port, then reconnect) keeps the guest, its
#   NIC and its VF; the interface attached --config gets its VF at the next start;
# - `virsh net-destroy` of that network while the guest runs keeps the VFs; the guest's destroy
#   restores them;
# - with hotplug delivery, `virsh save` of a hybrid guest (its primary hidden) frees the VF at
#   `release end saved`, and `virsh restore` plugs it again after the image is loaded;
# - the hybrid pool carried in a bridge network's <metadata> gives a VF; in a hostdev network's,
#   libvirt refuses the <interface> itself and release end failed puts the VF back;
# - at the end, every VF free with its original MAC and driver, and `vfpool reconcile --dry-run`
#   finds nothing to free.
#
# One PASS/FAIL line per check, then "N passed, M failed"; exit 1 on any failure.
# Env: VFPOOL_BIN (default /usr/local/bin/vfpool), VFPOOL_TEST_ROOT (the tree whose install.sh is
# tested, default this repository).
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # the harness: settings, check, cleanup, ...
POOLS=(vfplpa vfplpb vfplhy)
DOMS=(vfpl-a vfpl-two vfpl-h vfpl-race1 vfpl-race2 vfpl-m vfpl-d vfpl-renamed vfpl-s)
META_NETS=(vfplhm vfplhd vfplcnt vfplpa)
NET=vfplhy
BR=vfplbr0
WRAPPER=/usr/local/bin/vfpool-qemu
wrote_pools=0 pools_started=0 made_bridge=0 net_defined=0
# A qemu hook run before vfpool's (names sort) that, while $HOLD names the operation, holds a
# start there (touching $HOLD.held): libvirtd is killed at `start` (after vfpool's prepare,
# before QEMU) or at `started` (QEMU runs, vfpool's started has not run).
HOLD_HOOK=/etc/libvirt/hooks/qemu.d/00-vfpl-hold
HOLD=/run/vfpl-hold-start

vp() { env -i LC_ALL=C HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin "$VFPOOL" "$@"; }

# vfs: one line per VF of every PF in `vfpool status --json`: "PF INDEX DRIVER MAC OWNER".
vfs() {
  vp status --json 2>"$work/status.err" | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      for (const pf of JSON.parse(s).pfs ?? []) for (const vf of pf.vfs) console.log([pf.name, vf.index, vf.driver, vf.mac, vf.owner ? vf.owner.domain : "-"].join(" "));
    });'
}
# owned DOMAIN: how many VFs DOMAIN holds.
owned() { vfs | awk -v d="$1" '$5 == d' | wc -l; }
log_lines() { wc -l <"$work/state/vfpool.log"; }
qemu_pid() { cat "/run/libvirt/qemu/$1.pid" 2>/dev/null; }
virsh_fails() { # virsh_fails OUT ARGS...: virsh must fail; its stderr in $work/OUT
  local out=$1; shift
  if v "$@" >"$work/virsh.out" 2>"$work/$out"; then why="virsh $* succeeded"; return 1; fi
}

dump_diagnostics() {
  [ -n "$work" ] && [ -d "$work/state" ] || return 0
  echo "--- last lines of $work/state/vfpool.log" >&2
  tail -n 40 "$work/state/vfpool.log" >&2 2>/dev/null
  echo "--- VFs" >&2
  vfs >&2 2>/dev/null
}

cleanup_test() {
  if [ $started_daemon = 1 ]; then
    local d
    for d in "${DOMS[@]}"; do v destroy "$d" >/dev/null 2>&1; v undefine "$d" >/dev/null 2>&1; done
    if [ $net_defined = 1 ]; then
      local n
      for n in "$NET" "${META_NETS[@]}"; do v net-destroy "$n" >/dev/null 2>&1; v net-undefine "$n" >/dev/null 2>&1; done
    fi
  fi
  if [ $pools_started = 1 ]; then
    check "vfpool net-destroy of the three pools (no guest left holding a VF)" pools_stop
  fi
  [ $made_bridge = 1 ] && ip link del "$BR" 2>/dev/null
  rm -f "$HOLD" "$HOLD.held" "$HOLD_HOOK"
  if [ $wrote_pools = 1 ]; then local p; for p in "${POOLS[@]}"; do rm -f "$CONF_DIR/networks/$p.xml"; done; fi
}

pools_stop() {
  local p
  for p in "${POOLS[@]}"; do
    vp net-destroy "$p" >"$work/pool-stop.out" 2>&1 || grep -q 'not active' "$work/pool-stop.out" || { why="$p: $(tail -n 2 "$work/pool-stop.out")"; return 1; }
  done
  pools_started=0
}

# ---- setup -------------------------------------------------------------------------------------
harness_setup vfpool-lifecycle-test
chmod 0755 "$work"
for p in "${POOLS[@]}"; do [ -e "$CONF_DIR/networks/$p.xml" ] && setup_fail "$CONF_DIR/networks/$p.xml exists already; remove it (this test defines and removes it)"; done
ip link show "$BR" >/dev/null 2>&1 && setup_fail "a netdev $BR exists already; remove it (this test makes and removes it)"

cat >"$work/host.json" <<'JSON'
{"pfs":[{"name":"eth1","totalVfs":8},{"name":"eth2","totalVfs":8},{"name":"eth3","totalVfs":4}]}
JSON

check "install.sh installs the CLI, the wrapper and both hooks" install_vfpool
[ $failed = 0 ] || exit 1
[ -x "$WRAPPER" ] || setup_fail "$WRAPPER missing after install.sh"

mkdir -p "$CONF_DIR/networks"
write_conf
wrote_pools=1
printf "<network><name>vfplpa</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='2'/></pf></forward></network>\n" >"$CONF_DIR/networks/vfplpa.xml"
printf "<network><name>vfplpb</name><forward mode='hostdev' managed='yes'><pf dev='eth2'><vf num='2'/></pf></forward></network>\n" >"$CONF_DIR/networks/vfplpb.xml"
printf "<network><name>vfplhy</name><forward mode='pci-passthrough-hybrid' managed='yes'><pf dev='eth3'><vf num='2'/></pf></forward></network>\n" >"$CONF_DIR/networks/vfplhy.xml"

start_pools() {
  pools_started=1
  local p
  for p in vfplpa vfplpb; do vp net-start "$p" >"$work/pool.out" 2>&1 || { why="$p: $(tail -n 3 "$work/pool.out")"; return 1; }; done
  [ "$(vfs | awk '$5 == "-" && $3 == "vfio-pci"' | wc -l)" = 4 ] || { why="VFs: $(vfs | tr '\n' ';')"; return 1; }
}
check "vfpool net-start vfplpa and vfplpb: 2 VFs each on eth1 and eth2, on vfio-pci, free" start_pools
[ $failed = 0 ] || exit 1
VFS0=$(vfs)

[ -e "$HOLD_HOOK" ] && setup_fail "$HOLD_HOOK exists already; remove it (this test installs and removes it)"
mkdir -p "${HOLD_HOOK%/*}"
printf '#!/bin/sh\n[ "$2" = "$(cat %s 2>/dev/null)" ] || exit 0\n: >%s.held\nwhile [ -e %s ]; do sleep 0.1; done\n' "$HOLD" "$HOLD" "$HOLD" >"$HOLD_HOOK" && chmod 0755 "$HOLD_HOOK" || setup_fail "cannot write $HOLD_HOOK"
start_daemon_clean

# dom_xml NAME METADATA [DEVICES]: a TCG q35 domain, no disk, 64 MiB, two free root ports for
# hotplug, QEMU = vfpool's wrapper.
dom_xml() {
  vfpool_domain_xml "$1" "$2" q35 "$WRAPPER" "<controller type='usb' model='none'/>
    <controller type='pci' index='0' model='pcie-root'/>
    <controller type='pci' index='1' model='pcie-root-port'/>
    <controller type='pci' index='2' model='pcie-root-port'/>
    ${3:-}"
}
hy_nic() { printf "<interface type='network'><source network='%s'/><mac address='%s'/><model type='virtio'/></interface>" "$NET" "$1"; }

dom_xml vfpl-a "<vfpool:hostdev pool='vfplpa' mac='52:54:00:76:70:01'/><vfpool:hostdev pool='vfplpb' mac='52:54:00:76:70:02'/>" >"$work/vfpl-a.xml"
dom_xml vfpl-two "<vfpool:hostdev pool='vfplpb' mac='52:54:00:76:70:21'/><vfpool:hostdev pool='vfplpa' mac='52:54:00:76:70:22'/><vfpool:hostdev pool='vfplpa' mac='52:54:00:76:70:23'/>" >"$work/vfpl-two.xml"
dom_xml vfpl-h "" "$(hy_nic 52:54:00:76:70:41)" >"$work/vfpl-h.xml"
dom_xml vfpl-race1 "<vfpool:hostdev pool='vfplpa' mac='52:54:00:76:70:31'/>" >"$work/vfpl-race1.xml"
dom_xml vfpl-race2 "<vfpool:hostdev pool='vfplpa' mac='52:54:00:76:70:32'/>" >"$work/vfpl-race2.xml"
hy_nic 52:54:00:76:70:42 >"$work/hot-nic.xml"

define_all() { local d; for d in vfpl-a vfpl-two; do virsh_ok define "$work/$d.xml" || return 1; done; }
check "virsh define of the guests" define_all

# ---- a guest with VFs of two pools; reset, suspend, resume, reboot -----------------------------
start_a() {
  virsh_ok start vfpl-a || return 1
  [ "$(owned vfpl-a)" = 2 ] || { why="vfpl-a holds $(owned vfpl-a) VF(s): $(vfs | tr '\n' ';')"; return 1; }
  vfs | grep -q '^eth1 0 vfio-pci 52:54:00:76:70:01 vfpl-a$' && vfs | grep -q '^eth2 0 vfio-pci 52:54:00:76:70:02 vfpl-a$' \
    || { why="VFs: $(vfs | tr '\n' ';')"; return 1; }
  local n; n=$(tr '\0' '\n' <"/proc/$(qemu_pid vfpl-a)/cmdline" | grep -c '"id":"vfpool-vf[01]"')
  [ "$n" = 2 ] || { why="QEMU's command line has $n of vfpool-vf0, vfpool-vf1 (is the wrapper the emulator?)"; return 1; }
}
check "virsh start vfpl-a: VF 0 of eth1 and of eth2 with its MACs, both on QEMU's command line (the wrapper)" start_a

nothing_released() {
  local pid lines
  pid=$(qemu_pid vfpl-a) lines=$(log_lines)
  virsh_ok reset vfpl-a && virsh_ok suspend vfpl-a && virsh_ok resume vfpl-a && virsh_ok reboot vfpl-a || return 1
  [ "$(qemu_pid vfpl-a)" = "$pid" ] || { why="QEMU pid changed: $pid -> $(qemu_pid vfpl-a)"; return 1; }
  [ "$(log_lines)" = "$lines" ] || { why="vfpool logged: $(tail -n +$((lines + 1)) "$work/state/vfpool.log" | head -n 3 | tr '\n' ' ')"; return 1; }
  [ "$(owned vfpl-a)" = 2 ] || { why="vfpl-a holds $(owned vfpl-a) VF(s)"; return 1; }
}
check "virsh reset, suspend, resume, reboot: same QEMU, no hook ran for vfpool, both VFs still held" nothing_released

in_use_net_start() {
  printf "<network><name>vfplcnt</name><forward mode='hostdev' managed='yes'/><metadata><vfpool:pool xmlns:vfpool='%s'><vfpool:pf dev='eth1'><vfpool:vf num='3'/></vfpool:pf></vfpool:pool></metadata></network>\n" "$NS" >"$work/cnt.xml"
  virsh_ok net-define "$work/cnt.xml" || return 1
  net_defined=1
  virsh_fails cnt.err net-start vfplcnt || return 1
  grep -q "vfpool: pool 'vfplcnt': cannot change eth1 from 2 to 3 VFs: active pool 'vfplpa' draws from it" "$work/cnt.err" \
    || { why="virsh error lacks vfpool's sentence: $(tr '\n' ' ' <"$work/cnt.err")"; return 1; }
  say "  virsh: $(grep -m1 -o 'vfpool: .*' "$work/cnt.err" | head -c 300)"
  [ "$(v net-info vfplcnt | awk '/^Active:/ {print $2}')" = no ] || { why="vfplcnt is active"; return 1; }
  [ "$(vfs | grep -c '^eth1 ')" = 2 ] && [ "$(owned vfpl-a)" = 2 ] || { why="VFs: $(vfs | tr '\n' ';')"; return 1; }
}
check "virsh net-start of a network whose pool would change the count of eth1 (vfplpa's, vfpl-a on it): refused with vfpool's sentence" in_use_net_start

refused_over_running() {
  # libvirt follows every failed start with `stopped end`; vfplpa was started by vfpool net-start
  # before this libvirt start, and vfpl-a uses it: it must keep running as it was.
  printf "<network><name>vfplpa</name><forward mode='hostdev' managed='yes'/><metadata><vfpool:pool xmlns:vfpool='%s'><vfpool:pf dev='eth1'><vfpool:vf num='99'/></vfpool:pf></vfpool:pool></metadata></network>\n" "$NS" >"$work/over.xml"
  virsh_ok net-define "$work/over.xml" || return 1
  net_defined=1
  virsh_fails over.err net-start vfplpa
  local rc=$?
  v net-undefine vfplpa >/dev/null 2>&1
  [ $rc = 0 ] || return 1
  grep -q "vfpool: pool 'vfplpa': <vf num='99'> on PF eth1 is more than its sriov_totalvfs 8" "$work/over.err" \
    || { why="virsh error lacks vfpool's sentence: $(tr '\n' ' ' <"$work/over.err")"; return 1; }
  vp net-list --json | grep -q '"name":"vfplpa","mode":"hostdev","active":true' || { why="vfplpa is not active: $(vp net-list --json)"; return 1; }
  [ "$(vfs | grep -c '^eth1 ')" = 2 ] && [ "$(owned vfpl-a)" = 2 ] || { why="VFs: $(vfs | tr '\n' ';')"; return 1; }
  grep -q "libvirt's stop after its refused start leaves the pool running" "$work/state/vfpool.log" || { why="the log does not say the stop was left alone"; return 1; }
}
check "virsh net-start of a libvirt network named like the running pool vfplpa, refused: the stopped end libvirt follows it with leaves vfplpa running, vfpl-a's VFs held" refused_over_running

# ---- the last VF of a pool, raced for by two transient guests -----------------------------------
race() {
  (v create "$work/vfpl-race1.xml" >"$work/race1.out" 2>&1; echo $? >"$work/race1.rc") &
  (v create "$work/vfpl-race2.xml" >"$work/race2.out" 2>&1; echo $? >"$work/race2.rc") &
  wait
  local r1 r2 winner loser
  r1=$(cat "$work/race1.rc") r2=$(cat "$work/race2.rc")
  if [ "$r1" = 0 ] && [ "$r2" != 0 ]; then winner=vfpl-race1 loser=race2
  elif [ "$r2" = 0 ] && [ "$r1" != 0 ]; then winner=vfpl-race2 loser=race1
  else why="virsh create exits $r1 and $r2: $(cat "$work/race1.out" "$work/race2.out" | tr '\n' ' ')"; return 1; fi
  grep -q "pool 'vfplpa' is exhausted" "$work/$loser.out" || { why="the loser's virsh error lacks vfpool's sentence: $(tr '\n' ' ' <"$work/$loser.out")"; return 1; }
  say "  virsh: $(grep -m1 -o 'vfpool: .*' "$work/$loser.out" | head -c 200)"
  vfs | grep -q "^eth1 1 vfio-pci .* $winner\$" || { why="VF 1 of eth1 is not $winner's: $(vfs | tr '\n' ';')"; return 1; }
  [ "$(owned "vfpl-$loser")" = 0 ] || { why="vfpl-$loser holds a VF"; return 1; }
  virsh_ok destroy "$winner" || return 1
  v list --all --name | grep -q "^$winner\$" && { why="transient $winner still listed after destroy"; return 1; }
  vfs | grep -q '^eth1 1 vfio-pci .* -$' || { why="VF 1 of eth1 not free after destroy: $(vfs | tr '\n' ';')"; return 1; }
}
check "two virsh create at once for the last VF of vfplpa: one gets it, the other fails with vfpool's sentence" race

all_or_nothing() {
  virsh_fails two.err start vfpl-two || return 1
  grep -q "pool 'vfplpa' is exhausted" "$work/two.err" || { why="virsh error lacks vfpool's sentence: $(tr '\n' ' ' <"$work/two.err")"; return 1; }
  [ "$(owned vfpl-two)" = 0 ] || { why="vfpl-two holds $(owned vfpl-two) VF(s): $(vfs | tr '\n' ';')"; return 1; }
  vfs | grep -q '^eth2 1 vfio-pci .* -$' || { why="VF 1 of eth2 (vfplpb's free one) is not free as it was: $(vfs | tr '\n' ';')"; return 1; }
}
check "a guest asking vfplpb for 1 VF and vfplpa for 2 (1 free): refused, nothing taken from vfplpb either" all_or_nothing

# ---- QEMU killed behind libvirt's back ----------------------------------------------------------
killed() {
  local pid; pid=$(qemu_pid vfpl-a)
  [ -n "$pid" ] || { why="no pid file for vfpl-a"; return 1; }
  kill -KILL "$pid"
  local i; for i in $(seq 100); do [ "$(owned vfpl-a)" = 0 ] && break; sleep 0.1; done
  [ "$(owned vfpl-a)" = 0 ] || { why="vfpl-a still holds $(owned vfpl-a) VF(s) 10 s after QEMU was killed"; return 1; }
  grep -q "qemu-hook vfpl-a release end crashed.*released 2 VF(s)" "$work/state/vfpool.log" || { why="no 'release end crashed ... released 2 VF(s)' line"; return 1; }
  [ "$(vfs)" = "$VFS0" ] || { why="VFs are not as before the start: $(vfs | tr '\n' ';')"; return 1; }
}
check "QEMU of vfpl-a killed (SIGKILL): libvirt runs release end crashed, both VFs back as they were" killed

killed_while_down() {
  virsh_ok start vfpl-a || return 1
  local pid; pid=$(qemu_pid vfpl-a)
  stop_daemon || return 1
  kill -KILL "$pid"
  start_daemon || return 1
  local i; for i in $(seq 100); do [ "$(owned vfpl-a)" = 0 ] && break; sleep 0.1; done
  [ "$(owned vfpl-a)" = 0 ] || { why="vfpl-a still holds $(owned vfpl-a) VF(s) after libvirtd came back"; return 1; }
  [ "$(grep -c "qemu-hook vfpl-a release end crashed.*released 2 VF(s)" "$work/state/vfpool.log")" = 2 ] || { why="no second 'release end crashed' line"; return 1; }
  [ "$(vfs)" = "$VFS0" ] || { why="VFs are not as before the start: $(vfs | tr '\n' ';')"; return 1; }
}
check "QEMU killed while libvirtd is down: libvirtd, back, runs release end crashed; the VFs are back" killed_while_down

# libvirtd killed during a start, after vfpool's prepare and before QEMU: the daemon after it
# knows the domain as shut off and runs no release; its next start must not be refused for the
# VF that start left recorded.
# kill_held_start OP DOMAIN: virsh start DOMAIN, held at OP by the hold hook; libvirtd is killed
# there and started again.
kill_held_start() {
  echo "$1" >"$HOLD" && rm -f "$HOLD.held"
  (v start "$2" >"$work/held.out" 2>&1 &)
  local i; for i in $(seq 100); do [ -e "$HOLD.held" ] && break; sleep 0.1; done
  [ -e "$HOLD.held" ] || { rm -f "$HOLD"; why="the start of $2 did not reach $1: $(cat "$work/held.out")"; return 1; }
  kill -KILL "$(cat /run/libvirtd.pid)"
  rm -f "$HOLD" "$HOLD.held"
  stop_daemon && start_daemon
}
interrupted_start() {
  kill_held_start start vfpl-a || return 1
  [ "$(v domstate vfpl-a)" = "shut off" ] || { why="vfpl-a is '$(v domstate vfpl-a)' after the restart"; return 1; }
  virsh_ok start vfpl-a || return 1
  grep -q "qemu-hook vfpl-a prepare begin .*Step 0: 2 allocation(s) from an earlier run" "$work/state/vfpool.log" || { why="no 'Step 0: 2 allocation(s) from an earlier run' line"; return 1; }
  [ "$(owned vfpl-a)" = 2 ] || { why="vfpl-a holds $(owned vfpl-a) VF(s) after its start"; return 1; }
  virsh_ok destroy vfpl-a || return 1
  [ "$(vfs)" = "$VFS0" ] || { why="VFs are not as before the start: $(vfs | tr '\n' ';')"; return 1; }
}
check "libvirtd killed during vfpl-a's start (after prepare, before QEMU): after its restart, virsh start frees what that start left and succeeds" interrupted_start

# With hotplug delivery (the path real VFs take) the VFs reach QEMU at `started`: libvirtd killed
# before it leaves a running guest that only `reconnect` tells vfpool about.
interrupted_started() {
  write_conf && echo 'VFPOOL_SIM_DELIVERY=hotplug' >>"$CONF" || { why="cannot write $CONF"; return 1; }
  kill_held_start started vfpl-a || return 1
  local i; for i in $(seq 50); do grep -q "qemu-hook vfpl-a reconnect begin.*had not reached QEMU" "$work/state/vfpool.log" && break; sleep 0.1; done
  grep -q "qemu-hook vfpl-a reconnect begin: reconnect: vfpool-vf0, vfpool-vf1 had not reached QEMU .*plugged now" "$work/state/vfpool.log" || { why="no 'reconnect: vfpool-vf0, vfpool-vf1 had not reached QEMU ... plugged now' line"; return 1; }
  vp plug vfpl-a --dry-run >"$work/plug.out" 2>&1 && [ "$(grep -c 'is on the guest.s PCI bus already' "$work/plug.out")" = 2 ] || { why="vfpool plug --dry-run: $(tr '\n' ' ' <"$work/plug.out")"; return 1; }
  virsh_ok destroy vfpl-a || return 1
  [ "$(vfs)" = "$VFS0" ] || { why="VFs are not as before the start: $(vfs | tr '\n' ';')"; return 1; }
  write_conf
}
check "hotplug delivery, libvirtd killed at vfpl-a's started (QEMU runs, vfpool's started has not): reconnect plugs both VFs" interrupted_started

redefine_rename() {
  virsh_ok start vfpl-a || return 1
  v dumpxml vfpl-a --inactive | sed 's/52:54:00:76:70:01/52:54:00:76:70:09/' >"$work/vfpl-a2.xml"
  virsh_ok define "$work/vfpl-a2.xml" || return 1
  vfs | grep -q '^eth1 0 vfio-pci 52:54:00:76:70:01 vfpl-a$' || { why="after the define: $(vfs | tr '\n' ';')"; return 1; }
  virsh_ok destroy vfpl-a || return 1
  [ "$(vfs)" = "$VFS0" ] || { why="after destroy: $(vfs | tr '\n' ';')"; return 1; }
  virsh_ok domrename vfpl-a vfpl-renamed && virsh_ok start vfpl-renamed || return 1
  vfs | grep -q '^eth1 0 vfio-pci 52:54:00:76:70:09 vfpl-renamed$' || { why="after the rename and start: $(vfs | tr '\n' ';')"; return 1; }
  virsh_ok destroy vfpl-renamed && virsh_ok domrename vfpl-renamed vfpl-a || return 1
  [ "$(vfs)" = "$VFS0" ] || { why="after destroy: $(vfs | tr '\n' ';')"; return 1; }
}
check "virsh define of a new MAC while vfpl-a runs (kept until destroy, which restores by name); domrename: the new name gets the new MAC" redefine_rename

# ---- a hybrid pool behind a bridge network of its name: hotplug, daemon restart, net-destroy ----
hy_start() {
  ip link add "$BR" type bridge && made_bridge=1 && ip link set "$BR" up || { why="cannot make bridge $BR"; return 1; }
  printf "<network><name>%s</name><forward mode='bridge'/><bridge name='%s'/></network>\n" "$NET" "$BR" >"$work/net.xml"
  virsh_ok net-define "$work/net.xml" || return 1
  net_defined=1 pools_started=1
  virsh_ok net-start "$NET" || return 1
  [ "$(vfs | grep -c '^eth3 ')" = 2 ] || { why="eth3 has $(vfs | grep -c '^eth3 ') VFs after net-start"; return 1; }
  virsh_ok define "$work/vfpl-h.xml" && virsh_ok start vfpl-h || return 1
  vfs | grep -q '^eth3 0 vfio-pci 52:54:00:76:70:41 vfpl-h$' || { why="VFs: $(vfs | tr '\n' ';')"; return 1; }
}
check "virsh net-start $NET (bridge) starts the hybrid pool; vfpl-h's <interface> gets a VF with its MAC" hy_start

hot_refused() {
  local before; before=$(cat "$work/state/state.json")
  virsh_fails hot.err attach-device vfpl-h "$work/hot-nic.xml" --live || return 1
  grep -q "vfpool: domain 'vfpl-h': <interface> 52:54:00:76:70:42 on pci-passthrough-hybrid pool '$NET' would get no VF" "$work/hot.err" \
    || { why="virsh error lacks vfpool's sentence: $(tr '\n' ' ' <"$work/hot.err")"; return 1; }
  say "  virsh: $(grep -m1 -o 'vfpool: .*' "$work/hot.err" | head -c 300)"
  [ "$(v domiflist vfpl-h | grep -c "$NET")" = 1 ] || { why="vfpl-h has $(v domiflist vfpl-h | grep -c "$NET") interfaces on $NET"; return 1; }
  [ "$(cat "$work/state/state.json")" = "$before" ] || { why="state.json changed"; return 1; }
  virsh_ok attach-device vfpl-h "$work/hot-nic.xml" --config
}
check "virsh attach-device --live of a second hybrid <interface>: refused with vfpool's sentence; --config is accepted" hot_refused

restart_keeps() {
  local pid; pid=$(qemu_pid vfpl-h)
  VFPOOL_LAB_SKIP_PACKAGES=1 bash "$here/libvirtd.sh" restart >"$work/restart.out" 2>&1 || { why=$(tail -n 5 "$work/restart.out"); return 1; }
  local i; for i in $(seq 50); do [ "$(v domstate vfpl-h 2>/dev/null)" = running ] && break; sleep 0.1; done
  [ "$(v domstate vfpl-h)" = running ] && [ "$(qemu_pid vfpl-h)" = "$pid" ] || { why="vfpl-h is '$(v domstate vfpl-h)', pid '$(qemu_pid vfpl-h)' (was $pid)"; return 1; }
  [ "$(v domiflist vfpl-h | grep -c "$NET")" = 1 ] || { why="vfpl-h has $(v domiflist vfpl-h | grep -c "$NET") interfaces on $NET"; return 1; }
  grep -q "qemu-hook vfpl-h reconnect begin.*keeps 1 VF(s)" "$work/state/vfpool.log" || { why="no 'reconnect ... keeps 1 VF(s)' line"; return 1; }
  vfs | grep -q '^eth3 0 vfio-pci 52:54:00:76:70:41 vfpl-h$' || { why="VFs: $(vfs | tr '\n' ';')"; return 1; }
}
check "libvirtd restart (port-created again for the running guest's port, then reconnect): guest, NIC and VF kept" restart_keeps

net_destroy_kept() {
  virsh_ok net-destroy "$NET" || return 1
  vfs | grep -q '^eth3 0 vfio-pci 52:54:00:76:70:41 vfpl-h$' || { why="VFs after net-destroy: $(vfs | tr '\n' ';')"; return 1; }
  virsh_ok destroy vfpl-h || return 1
  [ "$(owned vfpl-h)" = 0 ] || { why="vfpl-h holds $(owned vfpl-h) VF(s) after destroy"; return 1; }
}
check "virsh net-destroy $NET while vfpl-h runs: its VF kept; virsh destroy vfpl-h frees it" net_destroy_kept

config_nic_at_start() {
  virsh_ok net-start "$NET" && virsh_ok start vfpl-h || return 1
  [ "$(owned vfpl-h)" = 2 ] || { why="vfpl-h holds $(owned vfpl-h) VF(s): $(vfs | tr '\n' ';')"; return 1; }
  vfs | grep -q '^eth3 1 vfio-pci 52:54:00:76:70:42 vfpl-h$' || { why="VFs: $(vfs | tr '\n' ';')"; return 1; }
  virsh_ok destroy vfpl-h && virsh_ok net-destroy "$NET" || return 1
}
check "the interface attached --config gets its VF at the next start" config_nic_at_start

# With hotplug delivery (the path real VFs take), a hybrid guest's primary is device_add'ed at
# started and stays hidden (no guest acks its standby), so QEMU can save the guest: release end
# saved frees the VF, and the restore's started (a QEMU waiting for the image) plugs it again.
save_restore() {
  write_conf && echo 'VFPOOL_SIM_DELIVERY=hotplug' >>"$CONF" || { why="cannot write $CONF"; return 1; }
  dom_xml vfpl-s "" "$(hy_nic 52:54:00:76:70:71)" >"$work/vfpl-s.xml"
  virsh_ok net-start "$NET" && virsh_ok define "$work/vfpl-s.xml" && virsh_ok start vfpl-s || return 1
  vfs | grep -q '^eth3 0 vfio-pci 52:54:00:76:70:71 vfpl-s$' || { why="after start: $(vfs | tr '\n' ';')"; return 1; }
  virsh_ok save vfpl-s "$work/vfpl-s.save" || return 1
  [ "$(owned vfpl-s)" = 0 ] || { why="vfpl-s holds $(owned vfpl-s) VF(s) after save"; return 1; }
  grep -q "qemu-hook vfpl-s release end saved.*released 1 VF(s)" "$work/state/vfpool.log" || { why="no 'release end saved ... released 1 VF(s)' line"; return 1; }
  virsh_ok restore "$work/vfpl-s.save" || return 1
  local i; for i in $(seq 100); do grep -q "migrate vfpl-s: confirmed-success" "$work/state/vfpool.log" && break; sleep 0.1; done
  grep -q "migrate vfpl-s: device_add vfpool-vf0 .*mac 52:54:00:76:70:71" "$work/state/vfpool.log" && grep -q "migrate vfpl-s: confirmed-success" "$work/state/vfpool.log" \
    || { why="the restore's confirm did not plug vfpool-vf0: $(grep 'vfpl-s' "$work/state/vfpool.log" | tail -n 2 | tr '\n' ' ')"; return 1; }
  [ "$(v domstate vfpl-s)" = running ] && vfs | grep -q '^eth3 0 vfio-pci 52:54:00:76:70:71 vfpl-s$' || { why="after restore: $(v domstate vfpl-s), $(vfs | tr '\n' ';')"; return 1; }
  virsh_ok destroy vfpl-s && virsh_ok net-destroy "$NET" || return 1
  [ "$(owned vfpl-s)" = 0 ] || { why="vfpl-s holds $(owned vfpl-s) VF(s) after destroy"; return 1; }
  write_conf
}
check "hotplug delivery: virsh save of a hybrid guest (primary hidden) frees its VF; virsh restore plugs it again" save_restore

# ---- a hybrid pool carried in a libvirt network's <metadata>: a bridge network, not a hostdev one --
meta_net() { # meta_net NAME FORWARD: the hybrid pool on eth3 (2 VFs) in the network's metadata
  printf "<network><name>%s</name>%s<metadata><vfpool:pool xmlns:vfpool='%s' mode='pci-passthrough-hybrid'><vfpool:pf dev='eth3'><vfpool:vf num='2'/></vfpool:pf></vfpool:pool></metadata></network>\n" "$1" "$2" "$NS"
}
meta_bridge() {
  meta_net vfplhm "<forward mode='bridge'/><bridge name='$BR'/>" >"$work/hm.xml"
  dom_xml vfpl-m "" "$(hy_nic 52:54:00:76:70:51 | sed "s/'$NET'/'vfplhm'/")" >"$work/vfpl-m.xml"
  virsh_ok net-define "$work/hm.xml" && virsh_ok net-start vfplhm || return 1
  virsh_ok define "$work/vfpl-m.xml" && virsh_ok start vfpl-m || return 1
  vfs | grep -q '^eth3 0 vfio-pci 52:54:00:76:70:51 vfpl-m$' || { why="VFs: $(vfs | tr '\n' ';')"; return 1; }
  virsh_ok destroy vfpl-m && virsh_ok net-destroy vfplhm || return 1
  [ "$(vfs | grep -c '^eth3 ')" = 0 ] || { why="eth3 has $(vfs | grep -c '^eth3 ') VFs after net-destroy"; return 1; }
}
check "a bridge network carrying the hybrid pool in its <metadata>: the guest's <interface> gets a VF" meta_bridge

meta_hostdev() {
  meta_net vfplhd "<forward mode='hostdev' managed='yes'/>" >"$work/hd.xml"
  dom_xml vfpl-d "" "$(hy_nic 52:54:00:76:70:61 | sed "s/'$NET'/'vfplhd'/")" >"$work/vfpl-d.xml"
  virsh_ok net-define "$work/hd.xml" && virsh_ok net-start vfplhd && virsh_ok define "$work/vfpl-d.xml" || return 1
  virsh_fails hd.err start vfpl-d || return 1
  grep -q "network 'vfplhd' requires exclusive access to interfaces, but none are available" "$work/hd.err" || { why="virsh: $(tr '\n' ' ' <"$work/hd.err")"; return 1; }
  grep -q "qemu-hook vfpl-d release end failed.*released 1 VF(s)" "$work/state/vfpool.log" || { why="no 'release end failed ... released 1 VF(s)' line for vfpl-d"; return 1; }
  [ "$(owned vfpl-d)" = 0 ] || { why="vfpl-d holds $(owned vfpl-d) VF(s)"; return 1; }
  virsh_ok net-destroy vfplhd
}
check "the same pool in a hostdev network: libvirt refuses the <interface> (as the README says), the VF goes back" meta_hostdev

# ---- nothing left -------------------------------------------------------------------------------
nothing_left() {
  local d
  for d in "${DOMS[@]}"; do v destroy "$d" >/dev/null 2>&1; v undefine "$d" >/dev/null 2>&1; done
  [ "$(vfs | grep -v '^eth3 ')" = "$VFS0" ] || { why="VFs are not as at the pools' start: $(vfs | tr '\n' ';')"; return 1; }
  [ -z "$(vfs | awk '$5 != "-"')" ] || { why="owned: $(vfs | awk '$5 != "-"' | tr '\n' ';')"; return 1; }
  vp reconcile --dry-run >"$work/reconcile.out" 2>&1 || { why="reconcile --dry-run exit $?: $(tail -n 2 "$work/reconcile.out")"; return 1; }
  grep -q '0 would free, 0 failed' "$work/reconcile.out" || { why="reconcile --dry-run: $(tr '\n' ' ' <"$work/reconcile.out")"; return 1; }
  vp history vfpl-a >"$work/history.out" 2>&1 && [ "$(grep -c '^.* release domain vfpl-a,' "$work/history.out")" = 12 ] \
    || { why="vfpool history vfpl-a: $(grep -c 'release domain' "$work/history.out") release entries, expected 12 (one per VF)"; return 1; }
}
check "at the end: every VF free as it was, reconcile --dry-run frees nothing, history has vfpl-a's 12 releases (one per VF)" nothing_left

exit 0 # cleanup (trap) stops the pools and the daemon, uninstalls, restores the conf and prints the totals
