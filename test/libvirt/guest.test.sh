#!/usr/bin/env bash
# vfpool's qemu hook under a real libvirt 11.3 daemon, on a simulated SR-IOV host.
#
#   npm ci && npm run build && sudo bash test/libvirt/guest.test.sh
#
# Installs vfpool (install.sh, prefix /usr/local), points /etc/vfpool/vfpool.conf at a simulated
# host and a private state directory (libvirt gives hooks no environment), defines a vfpool pool
# in /etc/vfpool/networks and starts it, starts libvirtd by hand (test/libvirt/libvirtd.sh; hooks
# are discovered at daemon start, so after install.sh), then drives TCG guests (`<domain
# type='qemu'>`, no disk, 64 MiB) that ask for a VF in their <metadata>, and reads
# `vfpool status --json` the way a hook would (vfpool.conf only, no VFPOOL_* in the environment).
# Everything is undone on exit, on failure too: domains destroyed and undefined, the pool
# stopped and its definition removed, the daemon it started stopped, `install.sh --uninstall`,
# vfpool.conf restored byte for byte (or removed if there was none).
#
# What is checked: start -> the VF is allocated to the domain with the domain's MAC and VLAN,
# bound to vfio-pci, its /dev/vfio group handed to libvirt-qemu, QEMU's pid recorded; a libvirtd
# restart while it runs -> `reconnect` keeps its VF; destroy -> released and restored; a start
# that fails after prepare (a missing disk) -> the VF is back in the pool as it was; a start the
# hook refuses (pool exhausted) -> libvirt shows vfpool's sentence; a guest without vfpool
# metadata -> vfpool state untouched; `virsh save` -> released; `virsh restore` -> the guest holds
# its VF again and keeps it while it runs (the restore's started is taken for an incoming
# migration, whose confirm must not free a running guest's VFs); `install.sh --uninstall` while a
# guest holds a VF -> refused (exit 3), nothing removed.
#
# One PASS/FAIL line per check, then "N passed, M failed"; exit 1 on any failure.
# Env: VFPOOL_BIN (default /usr/local/bin/vfpool), VFPOOL_TEST_ROOT (the tree whose install.sh is
# tested, default this repository).
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" # the harness: settings, check, cleanup, ...
POOL=vfpgpool
POOL_DEF=$CONF_DIR/networks/$POOL.xml
wrote_pool_def=0
DOMS=(vfpguest vfpfail vfpbig vfpplain)
MAC=52:54:00:76:66:01
pool_started=0

# vp ARGS...: the vfpool CLI with libvirt's hook environment: settings come from vfpool.conf only.
vp() { env -i LC_ALL=C HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin "$VFPOOL" "$@"; }

# vf_field INDEX EXPR: evaluates EXPR (JavaScript, `vf` bound) on VF INDEX of eth1 in `vfpool status --json`.
vf_field() {
  local out
  out=$(vp status --json 2>"$work/status.err") || { echo "vfpool status --json failed: $(head -c 400 "$work/status.err")" >&2; return 1; }
  printf '%s' "$out" | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      let j;
      try { j = JSON.parse(s); } catch (e) { console.error(`not JSON: ${s.slice(0, 200)}`); process.exit(1); }
      const pf = (j.pfs ?? []).find((p) => p.name === "eth1");
      const vf = pf && pf.vfs[Number(process.argv[1])];
      if (!vf) { console.error(`no VF ${process.argv[1]} on eth1 in ${s.slice(0, 300)}`); process.exit(1); }
      console.log(String(eval(process.argv[2])));
    });' "$1" "$2"
}

# expect_vf INDEX EXPR WANT: sets why on mismatch.
expect_vf() {
  local got
  got=$(vf_field "$1" "$2" 2>"$work/vf.err") || { why=$(cat "$work/vf.err"); return 1; }
  [ "$got" = "$3" ] || { why="VF $1: $2 is '$got', expected '$3'"; return 1; }
}

# sim_vf INDEX EXPR: a field of the simulated kernel's VF (what the "kernel" has, beyond status).
sim_vf() {
  node -e '
    const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const vf = s.pfs.find((p) => p.name === "eth1").vfs[Number(process.argv[2])];
    console.log(String(eval(process.argv[3])));' "$work/host.json" "$1" "$2"
}

dump_diagnostics() {
  [ -n "$work" ] && [ -d "$work/state" ] || return 0
  echo "--- last lines of $work/state/vfpool.log" >&2
  tail -n 40 "$work/state/vfpool.log" >&2 2>/dev/null
  echo "--- state.json" >&2
  head -c 3000 "$work/state/state.json" >&2 2>/dev/null; echo >&2
}

# cleanup_test: called first by lib.sh's cleanup; the domains go while the daemon still runs,
# then the pool (no guest left holding a VF).
cleanup_test() {
  if [ $started_daemon = 1 ]; then
    local d
    for d in "${DOMS[@]}"; do
      v destroy "$d" >/dev/null 2>&1
      v undefine "$d" >/dev/null 2>&1
    done
  fi
  if [ $pool_started = 1 ]; then
    check "vfpool net-destroy $POOL (no guest left holding a VF)" pool_stop
  fi
  # Only a definition this run wrote: setup refuses to start over an existing one.
  [ $wrote_pool_def = 1 ] && rm -f "$POOL_DEF"
}

pool_stop() {
  vp net-destroy "$POOL" >"$work/pool-stop.out" 2>&1 || { why=$(tail -n 3 "$work/pool-stop.out"); return 1; }
  pool_started=0
}

# ---- setup -------------------------------------------------------------------------------------
harness_setup vfpool-guest-test
chmod 0755 "$work"
[ -e "$POOL_DEF" ] && setup_fail "$POOL_DEF exists already; remove it (this test defines and removes it)"

cat >"$work/host.json" <<'JSON'
{"pfs":[{"name":"eth1","totalVfs":8}]}
JSON

check "install.sh installs the CLI and both hooks" install_vfpool
[ $failed = 0 ] || exit 1

mkdir -p "$CONF_DIR/networks"
write_conf
wrote_pool_def=1
printf "<network><name>%s</name><forward mode='hostdev' managed='yes'><pf dev='eth1'><vf num='4'/></pf></forward></network>\n" "$POOL" >"$POOL_DEF"

start_pool() {
  pool_started=1
  vp net-start "$POOL" >"$work/pool.out" 2>&1 || { why=$(tail -n 3 "$work/pool.out"); return 1; }
  expect_vf 0 'vf.driver' vfio-pci && expect_vf 3 'vf.owner' null
}
check "vfpool net-start $POOL: 4 VFs on the simulated eth1, bound to vfio-pci, free" start_pool
[ $failed = 0 ] || exit 1
MAC0=$(vf_field 0 'vf.mac')

start_daemon_clean

# dom_xml NAME METADATA [DEVICES]: a TCG domain, no disk, 64 MiB.
dom_xml() { vfpool_domain_xml "$1" "$2" "" /usr/bin/qemu-system-x86_64 "${3:-}"; }

# ---- checks ------------------------------------------------------------------------------------
dom_xml vfpguest "<vfpool:hostdev pool='$POOL' mac='$MAC' vlan='42'/>" >"$work/vfpguest.xml"
dom_xml vfpfail "<vfpool:hostdev pool='$POOL' mac='52:54:00:76:66:02'/>" \
  "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/nonexistent-vfpool-test.img'/><target dev='vda' bus='virtio'/></disk>" >"$work/vfpfail.xml"
big=""
for i in 1 2 3 4; do big+="<vfpool:hostdev pool='$POOL' mac='52:54:00:76:67:0$i'/>"; done
dom_xml vfpbig "$big" >"$work/vfpbig.xml"
printf "<domain type='qemu'><name>vfpplain</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator><memballoon model='none'/></devices></domain>\n" >"$work/vfpplain.xml"

define_all() { local d; for d in "${DOMS[@]}"; do virsh_ok define "$work/$d.xml" || return 1; done; }
check "virsh define of the four TCG domains" define_all

qemu_pid() { cat /run/libvirt/qemu/vfpguest.pid 2>/dev/null; }

start_guest() {
  virsh_ok start vfpguest || return 1
  expect_vf 0 'vf.owner && vf.owner.domain' vfpguest || return 1
  expect_vf 0 'vf.mac' "$MAC" || return 1
  expect_vf 0 'vf.vlan' 42 || return 1
  expect_vf 0 'vf.driver' vfio-pci || return 1
  expect_vf 1 'vf.owner' null
}
check "virsh start vfpguest: VF 0 owned by vfpguest with the domain's MAC $MAC and VLAN 42" start_guest

handed_over() {
  local owner pid
  owner=$(sim_vf 0 'vf.vfioOwner.uid + ":" + vf.vfioOwner.gid')
  # The user QEMU runs as is the live XML's DAC label (Debian: +64055:+64055, libvirt-qemu).
  local label want
  label=$(v dumpxml vfpguest | sed -n "s|.*<label>\(.*\)</label>.*|\1|p" | head -n 1)
  want=$(printf '%s' "$label" | tr -d '+')
  [[ $want =~ ^[0-9]+:[0-9]+$ ]] || { why="no numeric DAC label in the live XML (got '$label')"; return 1; }
  [ "$want" = "$(id -u libvirt-qemu):$(getent group libvirt-qemu | cut -d: -f3)" ] || { why="DAC label $label is not libvirt-qemu"; return 1; }
  [ "$owner" = "$want" ] || { why="/dev/vfio group owner is $owner, expected $want (the DAC label $label)"; return 1; }
  pid=$(qemu_pid)
  [ -n "$pid" ] || { why="no /run/libvirt/qemu/vfpguest.pid"; return 1; }
  expect_vf 0 'vf.owner.pid' "$pid"
}
check "start begin handed the VF's /dev/vfio group to libvirt-qemu; started recorded QEMU's pid" handed_over

restart_daemon() {
  local pid_before
  pid_before=$(qemu_pid)
  VFPOOL_LAB_SKIP_PACKAGES=1 bash "$here/libvirtd.sh" restart >"$work/restart.out" 2>&1 \
    || { why=$(tail -n 5 "$work/restart.out"); return 1; }
  local state
  state=$(v domstate vfpguest 2>/dev/null)
  [ "$state" = running ] || { why="vfpguest is '$state' after the restart"; return 1; }
  [ "$(qemu_pid)" = "$pid_before" ] || { why="QEMU pid changed: $pid_before -> $(qemu_pid)"; return 1; }
  grep -q "qemu-hook vfpguest reconnect begin.*reconnect: keeps 1 VF(s), QEMU pid $pid_before" "$work/state/vfpool.log" \
    || { why="no 'reconnect: keeps 1 VF(s)' line in the log"; return 1; }
  expect_vf 0 'vf.owner && vf.owner.domain' vfpguest && expect_vf 0 'vf.mac' "$MAC" && expect_vf 0 'vf.owner.pid' "$pid_before"
}
check "libvirtd.sh restart while vfpguest runs: reconnect keeps its VF (same owner, MAC, pid)" restart_daemon

destroy_guest() {
  virsh_ok destroy vfpguest || return 1
  expect_vf 0 'vf.owner' null || return 1
  expect_vf 0 'vf.mac' "$MAC0" || return 1
  expect_vf 0 'vf.vlan' 0 || return 1
  expect_vf 0 'vf.driver' vfio-pci || return 1
  local owner
  owner=$(sim_vf 0 'vf.vfioOwner.uid + ":" + vf.vfioOwner.gid')
  [ "$owner" = "0:0" ] || { why="/dev/vfio group owner is $owner after release, expected 0:0"; return 1; }
  [ ! -e "$work/state/index/domain.vfpguest" ] || { why="marker index/domain.vfpguest is still there"; return 1; }
}
check "virsh destroy vfpguest (release end destroyed): VF 0 free, original MAC, VLAN 0, group back to root" destroy_guest

failed_start() {
  if v start vfpfail >"$work/virsh.out" 2>"$work/fail.err"; then why="virsh start vfpfail succeeded"; return 1; fi
  say "  virsh: $(head -n 2 "$work/fail.err" | tr '\n' ' ')"
  # It failed after vfpool's prepare had allocated and configured the VF (the log says so)…
  grep -q "qemu-hook vfpfail prepare begin domain 'vfpfail': Step 3: prepared 1 VF(s)" "$work/state/vfpool.log" \
    || { why="vfpool's prepare did not run before the failure (no 'prepared' line for vfpfail): test is void"; return 1; }
  grep -q "qemu-hook vfpfail release end failed" "$work/state/vfpool.log" || { why="no 'release end failed' line in the log"; return 1; }
  # …and the VF is back in the pool as it was.
  expect_vf 0 'vf.owner' null && expect_vf 0 'vf.mac' "$MAC0" && expect_vf 0 'vf.vlan' 0
}
check "a start that fails after prepare (missing disk): release end failed puts the VF back as it was" failed_start

refused_start() {
  virsh_ok start vfpguest || return 1
  if v start vfpbig >"$work/virsh.out" 2>"$work/big.err"; then why="virsh start vfpbig succeeded"; return 1; fi
  grep -q "pool '$POOL' is exhausted" "$work/big.err" || { why="virsh error lacks vfpool's sentence: $(tr '\n' ' ' <"$work/big.err")"; return 1; }
  say "  virsh: $(grep -m1 -o 'vfpool: .*' "$work/big.err" | head -c 300)"
  expect_vf 0 'vf.owner && vf.owner.domain' vfpguest && expect_vf 1 'vf.owner' null && expect_vf 3 'vf.owner' null || return 1
  virsh_ok destroy vfpguest && expect_vf 0 'vf.owner' null
}
check "a start the hook refuses (4 VFs asked, 3 free): virsh shows vfpool's sentence, nothing allocated" refused_start

plain_guest() {
  local before after
  before=$(cat "$work/state/state.json")
  virsh_ok start vfpplain || return 1
  virsh_ok destroy vfpplain || return 1
  after=$(cat "$work/state/state.json")
  [ "$before" = "$after" ] || { why="state.json changed for a guest without vfpool metadata"; return 1; }
  ! grep -q "vfpplain" "$work/state/vfpool.log" || { why="vfpool logged something for vfpplain (Node ran?)"; return 1; }
}
check "a guest without vfpool metadata starts and stops; vfpool's state and log untouched" plain_guest

# `virsh save` then `virsh restore`: libvirt runs release end saved, then prepare, start and
# started for a QEMU waiting for the image, which vfpool's started takes for an incoming migration
# and hands to a detached confirm. These domains do not run through vfpool-qemu (no QMP socket):
# the confirm must leave the running guest its VF, not free it as a failed migration's.
save_restore() {
  virsh_ok start vfpguest || return 1
  virsh_ok save vfpguest "$work/vfpguest.save" || return 1
  expect_vf 0 'vf.owner' null && expect_vf 0 'vf.mac' "$MAC0" || return 1
  virsh_ok restore "$work/vfpguest.save" || return 1
  local i; for i in $(seq 100); do grep -q "migrate confirm vfpguest --role destination --wait-incoming failed\|migrate vfpguest: the incoming QEMU is gone" "$work/state/vfpool.log" && break; sleep 0.1; done
  grep -q "migrate confirm vfpguest --role destination --wait-incoming failed: domain 'vfpguest': its QEMU (pid $(qemu_pid)) runs but does not answer on vfpool's QMP socket" "$work/state/vfpool.log" \
    || { why="the restore's confirm: $(grep 'vfpguest' "$work/state/vfpool.log" | grep -i 'confirm\|migrat' | tail -n 2 | tr '\n' ' ')"; return 1; }
  expect_vf 0 'vf.owner && vf.owner.domain' vfpguest && expect_vf 0 'vf.mac' "$MAC" && expect_vf 0 'vf.owner.pid' "$(qemu_pid)" || return 1
  virsh_ok destroy vfpguest && expect_vf 0 'vf.owner' null && expect_vf 0 'vf.mac' "$MAC0"
}
check "virsh save (release end saved frees the VF) and virsh restore: the restored guest holds its VF again, kept while it runs" save_restore

# Uninstalling under a running guest would leave its VF as the guest had it: libvirt's release
# end would find no hook. install.sh --uninstall refuses, naming the guest, and removes nothing.
uninstall_refused() {
  virsh_ok start vfpguest || return 1
  local rc=0
  (cd "$root" && bash install.sh --uninstall) >"$work/uninstall-refused.out" 2>&1 || rc=$?
  [ $rc = 3 ] || { why="install.sh --uninstall exit $rc: $(tail -n 2 "$work/uninstall-refused.out")"; return 1; }
  grep -q "install.sh: vfpool still holds VFs for domain(s) vfpguest[ ;].* or uninstall with --force" "$work/uninstall-refused.out" \
    || { why="not vfpool's line: $(head -c 300 "$work/uninstall-refused.out")"; return 1; }
  local f; for f in "$VFPOOL" "$NET_HOOK" "$QEMU_HOOK"; do [ -x "$f" ] || { why="$f is gone"; return 1; }; done
  virsh_ok destroy vfpguest && expect_vf 0 'vf.owner' null && expect_vf 0 'vf.mac' "$MAC0"
}
check "install.sh --uninstall while vfpguest holds a VF: exit 3 naming it, nothing removed; destroy still restores the VF" uninstall_refused

undefine_all() {
  local d left
  for d in "${DOMS[@]}"; do v destroy "$d" >/dev/null 2>&1; virsh_ok undefine "$d" || return 1; done
  left=$(v list --all --name | grep -x 'vfp.*' | tr '\n' ' ')
  [ -z "$left" ] || { why="still defined: $left"; return 1; }
}
check "virsh undefine of the four domains" undefine_all

exit 0 # cleanup (trap) stops the pool and the daemon, uninstalls, restores the conf and prints the totals
