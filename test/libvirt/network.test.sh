#!/usr/bin/env bash
# vfpool's network hook under a real libvirt 11.3 daemon, on a simulated SR-IOV host.
#
#   npm ci && npm run build && sudo bash test/libvirt/network.test.sh
#
# Installs vfpool (install.sh, prefix /usr/local), points /etc/vfpool/vfpool.conf at a simulated
# host and a private state directory (libvirt gives hooks no environment, so the file is how the
# hook learns them), starts libvirtd by hand (test/libvirt/libvirtd.sh; hooks are discovered at
# daemon start, so after install.sh), then drives `virsh net-*` and reads `vfpool status --json`.
# Everything is undone on exit, on failure too: networks undefined, the daemon it started stopped,
# `install.sh --uninstall`, vfpool.conf restored byte for byte (or removed if there was none).
#
# The networks use `<forward mode='hostdev' managed='yes'/>` with the pool in <metadata>: libvirt
# 11.3 starts a hostdev network without a device pool without looking at the host, and still hands
# the hook the metadata. The real-host form `<forward mode='hostdev'><pf dev='eth1'/></forward>`
# makes libvirt look for a netdev eth1 and its VFs right after `start begin` ("No usable Vf's
# present on SRIOV PF eth1"), which a simulated host cannot satisfy; check 10 covers that form.
#
# One PASS/FAIL line per check, then "N passed, M failed"; exit 1 on any failure.
# Env: VFPOOL_BIN (default /usr/local/bin/vfpool), VFPOOL_TEST_ROOT (the tree whose install.sh is
# tested, default this repository).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${VFPOOL_TEST_ROOT:-$repo}
VFPOOL=${VFPOOL_BIN:-/usr/local/bin/vfpool}
URI=qemu:///system
CONF_DIR=/etc/vfpool
CONF=$CONF_DIR/vfpool.conf
NET_HOOK=/etc/libvirt/hooks/network.d/vfpool
QEMU_HOOK=/etc/libvirt/hooks/qemu.d/vfpool
NETS=(vfp-net vfp-big vfp-pf)
NS=https://vfpool.dev/xmlns/1

passed=0 failed=0
why=""           # a check function sets it to say what it saw when it fails
started_daemon=0 installed=0
had_conf_dir=0 had_conf=0 had_net_d=0 had_qemu_d=0
work=""

now_ms() { date +%s%3N; }
say() { printf '%s\n' "$*"; }

# check NAME FUNCTION [ARGS...]: runs FUNCTION, prints one PASS/FAIL line with its duration.
check() {
  local name=$1 t0 ms; shift
  why=""
  t0=$(now_ms)
  if "$@"; then
    ms=$(( $(now_ms) - t0 ))
    passed=$((passed + 1)); say "PASS $name ($ms ms)"
  else
    ms=$(( $(now_ms) - t0 ))
    failed=$((failed + 1)); say "FAIL $name ($ms ms)${why:+: $why}"
  fi
}

# setup_fail MESSAGE: a step the checks depend on failed; count it and stop (cleanup still runs).
setup_fail() { failed=$((failed + 1)); say "FAIL setup: $*"; exit 1; }

v() { virsh -q -c "$URI" "$@"; }

# num_vfs PF [env...]: numVfs of PF in `vfpool status --json`, or an explanation on stderr.
# With "conf-only" as the second word it runs with libvirt's hook environment (no VFPOOL_*).
num_vfs() {
  local pf=$1 mode=${2:-env} out
  if [ "$mode" = conf-only ]; then
    out=$(env -i LC_ALL=C HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin "$VFPOOL" status --json 2>"$work/status.err")
  else
    out=$(VFPOOL_HOST="sim:$work/host.json" VFPOOL_STATE_DIR="$work/state" "$VFPOOL" status --json 2>"$work/status.err")
  fi || { echo "vfpool status --json failed: $(head -c 400 "$work/status.err")" >&2; return 1; }
  printf '%s' "$out" | node -e '
    let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      let j;
      try { j = JSON.parse(s); } catch (e) { console.error(`not JSON: ${s.slice(0, 200)}`); process.exit(1); }
      const pf = (j.pfs ?? []).find((p) => p.name === process.argv[1]);
      if (!pf) { console.error(`no PF ${process.argv[1]} in ${s.slice(0, 200)}`); process.exit(1); }
      console.log(pf.numVfs);
    });' "$pf"
}

# expect_vfs PF N [conf-only]: sets why on mismatch.
expect_vfs() {
  local got
  got=$(num_vfs "$1" "${3:-env}" 2>"$work/num.err") || { why=$(cat "$work/num.err"); return 1; }
  [ "$got" = "$2" ] || { why="$1 numVfs is $got, expected $2"; return 1; }
}

# net_xml NAME FORWARD PF NUM: a libvirt network carrying a vfpool pool in its metadata.
net_xml() {
  printf "<network><name>%s</name>%s<metadata><vfpool:pool xmlns:vfpool='%s'><vfpool:pf dev='%s'><vfpool:vf num='%s'/></vfpool:pf></vfpool:pool></metadata></network>\n" \
    "$1" "$2" "$NS" "$3" "$4"
}

dump_diagnostics() {
  [ -n "$work" ] && [ -d "$work/state" ] || return 0
  local f
  while IFS= read -r f; do
    echo "--- last lines of $f" >&2
    tail -n 30 "$f" >&2
  done < <(find "$work/state" -type f -name '*.log' 2>/dev/null)
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [ $failed -gt 0 ] && dump_diagnostics
  if [ $started_daemon = 1 ]; then
    local n
    for n in "${NETS[@]}"; do
      v net-destroy "$n" >/dev/null 2>&1
      v net-undefine "$n" >/dev/null 2>&1
    done
    check "libvirtd stopped, no libvirtd or virtlogd left" stop_daemon
  fi
  if [ $installed = 1 ]; then
    check "install.sh --uninstall removes the CLI and both hooks" uninstall
  fi
  if [ -n "$work" ]; then
    check "vfpool.conf restored as it was" restore_conf
    rm -rf "$work"
  fi
  [ $had_net_d = 0 ] && rmdir /etc/libvirt/hooks/network.d 2>/dev/null
  [ $had_qemu_d = 0 ] && rmdir /etc/libvirt/hooks/qemu.d 2>/dev/null
  say "$passed passed, $failed failed"
  [ $failed = 0 ] && [ $rc = 0 ] && exit 0
  exit 1
}

stop_daemon() {
  bash "$here/libvirtd.sh" stop >"$work/stop.out" 2>&1 || { why=$(tail -n 3 "$work/stop.out"); return 1; }
  started_daemon=0
  local left
  left=$( { pgrep -x libvirtd; pgrep -x virtlogd; } | tr '\n' ' ')
  [ -z "$left" ] || { why="still running: pids $left"; return 1; }
}

uninstall() {
  (cd "$root" && bash install.sh --uninstall) >"$work/uninstall.out" 2>&1 \
    || { why="exit $?: $(tail -n 3 "$work/uninstall.out")"; return 1; }
  installed=0
  local f
  for f in "$VFPOOL" "$NET_HOOK" "$QEMU_HOOK"; do
    if [ -e "$f" ] || [ -L "$f" ]; then why="$f is still there"; return 1; fi
  done
}

restore_conf() {
  if [ $had_conf = 1 ]; then
    cp -p "$work/vfpool.conf.orig" "$CONF" && cmp -s "$work/vfpool.conf.orig" "$CONF" \
      || { why="could not restore $CONF (a copy is in $work/vfpool.conf.orig)"; return 1; }
  else
    rm -f "$CONF"
    if [ $had_conf_dir = 0 ]; then
      rmdir "$CONF_DIR/networks" 2>/dev/null
      rmdir "$CONF_DIR" 2>/dev/null
    fi
    [ ! -e "$CONF" ] || { why="$CONF is still there"; return 1; }
  fi
}

trap cleanup EXIT
trap 'say "interrupted"; failed=$((failed + 1)); exit 130' INT TERM

# ---- setup -------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || setup_fail "needs root (install.sh, libvirtd, /etc)"
(cd "$repo" && bash scripts/install-lab-packages.sh libvirt) || setup_fail "installing the libvirt packages failed"
[ -f "$root/install.sh" ] || setup_fail "$root/install.sh not found"
[ -d "$root/dist" ] || setup_fail "$root/dist not found: run 'npm ci && npm run build' first"

# Hooks are discovered when libvirtd starts: a daemon that is already up must go. Only one this
# harness started is ours to stop.
bash "$here/libvirtd.sh" stop >/dev/null 2>&1
if pgrep -x libvirtd >/dev/null; then
  setup_fail "a libvirtd not started by test/libvirt/libvirtd.sh runs (pid $(pgrep -x libvirtd | tr '\n' ' ')); stop it first"
fi

work=$(mktemp -d /tmp/vfpool-libvirt-test.XXXXXX)
mkdir -p "$work/state"
[ -d "$CONF_DIR" ] && had_conf_dir=1
[ -d /etc/libvirt/hooks/network.d ] && had_net_d=1
[ -d /etc/libvirt/hooks/qemu.d ] && had_qemu_d=1
if [ -e "$CONF" ]; then had_conf=1; cp -p "$CONF" "$work/vfpool.conf.orig"; fi

cat >"$work/host.json" <<'JSON'
{"pfs":[{"name":"eth1","totalVfs":8},{"name":"eth2","totalVfs":8}]}
JSON

install_vfpool() {
  installed=1 # from here on, uninstall at exit even if install.sh stopped half-way
  (cd "$root" && bash install.sh) >"$work/install.out" 2>&1 \
    || { why="exit $?: $(tail -n 3 "$work/install.out")"; return 1; }
  local f
  for f in "$VFPOOL" "$NET_HOOK" "$QEMU_HOOK"; do [ -x "$f" ] || { why="$f missing or not executable"; return 1; }; done
}
check "install.sh installs the CLI and both hooks" install_vfpool
[ $failed = 0 ] || exit 1

mkdir -p "$CONF_DIR"
printf 'VFPOOL_HOST=sim:%s\nVFPOOL_STATE_DIR=%s\n' "$work/host.json" "$work/state" >"$CONF"

start_daemon() {
  started_daemon=1
  VFPOOL_LAB_SKIP_PACKAGES=1 bash "$here/libvirtd.sh" start >"$work/start.out" 2>&1 \
    || { why=$(tail -n 5 "$work/start.out"); return 1; }
}
check "libvirtd starts with the vfpool hooks installed" start_daemon
[ $failed = 0 ] || exit 1

# A previous run killed hard may have left networks defined (and marked active) in libvirt.
for n in "${NETS[@]}"; do v net-destroy "$n" >/dev/null 2>&1; v net-undefine "$n" >/dev/null 2>&1; done

# ---- checks ------------------------------------------------------------------------------------
HOSTDEV="<forward mode='hostdev' managed='yes'/>"
net_xml vfp-net "$HOSTDEV" eth1 4 >"$work/vfp-net.xml"
net_xml vfp-big "$HOSTDEV" eth2 99 >"$work/vfp-big.xml"
net_xml vfp-pf "<forward mode='hostdev' managed='yes'><pf dev='eth1'/></forward>" eth1 4 >"$work/vfp-pf.xml"

virsh_ok() { # virsh_ok ARGS...: virsh succeeds; else why = its error
  v "$@" >"$work/virsh.out" 2>"$work/virsh.err" || { why="virsh $* exit $?: $(tr '\n' ' ' <"$work/virsh.err")"; return 1; }
}

define_all() { local n; for n in "${NETS[@]}"; do virsh_ok net-define "$work/$n.xml" || return 1; done; }
check "virsh net-define of the three metadata networks" define_all

start_net() { virsh_ok net-start vfp-net; }
check "virsh net-start vfp-net (hook: start begin)" start_net

check "vfpool status --json: eth1 numVfs 4 after net-start" expect_vfs eth1 4
check "vfpool status --json with libvirt's empty environment (vfpool.conf only): eth1 numVfs 4" \
  expect_vfs eth1 4 conf-only

big_refused() {
  if v net-start vfp-big >"$work/virsh.out" 2>"$work/big.err"; then why="net-start vfp-big succeeded"; return 1; fi
  grep -q 'sriov_totalvfs' "$work/big.err" || { why="virsh error lacks 'sriov_totalvfs': $(tr '\n' ' ' <"$work/big.err")"; return 1; }
  say "  virsh: $(grep -m1 'Hook script' "$work/big.err" || tail -n 1 "$work/big.err")"
}
check "virsh net-start vfp-big (99 VFs on a PF with sriov_totalvfs 8) fails with vfpool's sentence" big_refused

# libvirt still calls `stopped end` after a refused start: that must neither create VFs nor
# touch another running network's PF.
after_refusal() {
  local state
  state=$(v net-info vfp-big 2>/dev/null | awk '$1 == "Active:" { print $2 }')
  [ "$state" = no ] || { why="vfp-big Active: '$state', expected no"; return 1; }
  expect_vfs eth2 0 && expect_vfs eth1 4
}
check "after the refused start: eth2 numVfs 0, vfp-big inactive, eth1 still 4" after_refusal

destroy_net() { virsh_ok net-destroy vfp-net && expect_vfs eth1 0; }
check "virsh net-destroy vfp-net (hook: stopped end): eth1 numVfs 0" destroy_net

# The real-host form: the hook activates the VFs at `start begin`, then libvirt looks for netdev
# eth1 and its VFs, which the simulated host does not have, fails, and calls `stopped end`.
pf_form() {
  if v net-start vfp-pf >"$work/virsh.out" 2>"$work/pf.err"; then
    why="net-start vfp-pf succeeded: this machine has a netdev eth1 with VFs? (test assumes none)"; return 1
  fi
  grep -q "No usable Vf's present on SRIOV PF eth1" "$work/pf.err" \
    || { why="expected libvirt's own refusal after the hook passed, got: $(tr '\n' ' ' <"$work/pf.err")"; return 1; }
  expect_vfs eth1 0
}
check "<pf dev='eth1'> form: hook passes, libvirt then finds no netdev eth1, stopped end leaves numVfs 0" pf_form

undefine_all() {
  local n left
  # An earlier failed check may have left one active; undefine would only make it transient.
  for n in "${NETS[@]}"; do v net-destroy "$n" >/dev/null 2>&1; virsh_ok net-undefine "$n" || return 1; done
  left=$(v net-list --all --name | grep -x 'vfp-.*' | tr '\n' ' ')
  [ -z "$left" ] || { why="still defined: $left"; return 1; }
}
check "virsh net-undefine of all three networks" undefine_all

exit 0 # cleanup (trap) stops the daemon, uninstalls, restores the conf and prints the totals
