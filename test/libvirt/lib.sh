# Harness shared by the libvirt lab tests (network.test.sh, guest.test.sh). Sourced, not run:
#
#   set -uo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It provides:
#   - settings: here (this directory), repo, root (the tree whose install.sh is tested:
#     VFPOOL_TEST_ROOT, default this repository), VFPOOL (VFPOOL_BIN, default
#     /usr/local/bin/vfpool), URI, CONF_DIR, CONF, NET_HOOK, QEMU_HOOK, NS (vfpool's XML namespace);
#   - state: passed/failed, why (a check function sets it to say what it saw when it fails),
#     started_daemon, installed, work (the private work directory, "" until harness_setup made it)
#     and the had_* flags (what existed before the run, so cleanup removes only what it created);
#   - now_ms, say, check NAME FUNCTION [ARGS...], setup_fail MESSAGE, v (virsh on $URI), virsh_ok;
#   - harness_setup PREFIX: installs the EXIT/INT/TERM traps, checks root and the build, installs
#     the libvirt packages, stops a daemon left by libvirtd.sh, makes $work (/tmp/PREFIX.XXXXXX, with
#     $work/state), records the had_* flags and backs up vfpool.conf;
#   - check functions for the common steps: install_vfpool, start_daemon; write_conf points
#     vfpool.conf at $work/host.json and $work/state;
#   - cleanup, the EXIT trap: dump_diagnostics (if a check failed), cleanup_test, then stops the
#     daemon it started, `install.sh --uninstall`, restores vfpool.conf byte for byte (or removes
#     it), removes the directories it created, prints "N passed, M failed" and exits 0 only if
#     nothing failed (1 otherwise; INT/TERM count as a failure).
#
# A test script must define, before it calls harness_setup:
#   cleanup_test       undoes the test's own objects (networks, domains, pool definitions). Runs
#                      first in cleanup, with `set +e`, while the daemon it started still runs (if
#                      $started_daemon is 1); it may run checks of its own.
#   dump_diagnostics   what helps after a failure, on stderr; $work may be "".

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
root=${VFPOOL_TEST_ROOT:-$repo}
VFPOOL=${VFPOOL_BIN:-/usr/local/bin/vfpool}
URI=qemu:///system
CONF_DIR=/etc/vfpool
CONF=$CONF_DIR/vfpool.conf
NET_HOOK=/etc/libvirt/hooks/network.d/vfpool
QEMU_HOOK=/etc/libvirt/hooks/qemu.d/vfpool
NS=https://vfpool.dev/xmlns/1

passed=0 failed=0
why=""           # a check function sets it to say what it saw when it fails
started_daemon=0 installed=0
had_conf_dir=0 had_conf=0 had_networks_dir=0 had_net_d=0 had_qemu_d=0
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

virsh_ok() { # virsh_ok ARGS...: virsh succeeds; else why = its error
  v "$@" >"$work/virsh.out" 2>"$work/virsh.err" || { why="virsh $* exit $?: $(tr '\n' ' ' <"$work/virsh.err")"; return 1; }
}

# harness_setup PREFIX: see the header.
harness_setup() {
  declare -F cleanup_test dump_diagnostics >/dev/null \
    || { echo "lib.sh: the test script must define cleanup_test and dump_diagnostics" >&2; exit 1; }
  trap cleanup EXIT
  trap 'say "interrupted"; failed=$((failed + 1)); exit 130' INT TERM

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

  work=$(mktemp -d "/tmp/$1.XXXXXX")
  mkdir -p "$work/state"
  [ -d "$CONF_DIR" ] && had_conf_dir=1
  [ -d "$CONF_DIR/networks" ] && had_networks_dir=1
  [ -d /etc/libvirt/hooks/network.d ] && had_net_d=1
  [ -d /etc/libvirt/hooks/qemu.d ] && had_qemu_d=1
  if [ -e "$CONF" ]; then had_conf=1; cp -p "$CONF" "$work/vfpool.conf.orig"; fi
}

install_vfpool() {
  installed=1 # from here on, uninstall at exit even if install.sh stopped half-way
  (cd "$root" && bash install.sh) >"$work/install.out" 2>&1 \
    || { why="exit $?: $(tail -n 3 "$work/install.out")"; return 1; }
  local f
  for f in "$VFPOOL" "$NET_HOOK" "$QEMU_HOOK"; do [ -x "$f" ] || { why="$f missing or not executable"; return 1; }; done
}

# write_conf: libvirt gives hooks no environment, so vfpool.conf is how the hook learns the
# simulated host and the private state and history directories. VFPOOL_SIM_VF_DEVICE: the
# simulated VFs reach QEMU as emulated e1000e NICs on the command line (delivery 'cmdline'), so
# the 'started' hook has nothing to hotplug (a simulated VF has no /dev/vfio group to give QEMU).
write_conf() {
  printf 'VFPOOL_HOST=sim:%s\nVFPOOL_STATE_DIR=%s\nVFPOOL_JOURNAL_DIR=%s\nVFPOOL_SIM_VF_DEVICE=e1000e\n' "$work/host.json" "$work/state" "$work/journal" >"$CONF"
}

start_daemon() {
  started_daemon=1 # from here on, stop it at exit even if start failed half-way
  VFPOOL_LAB_SKIP_PACKAGES=1 bash "$here/libvirtd.sh" start >"$work/start.out" 2>&1 \
    || { why=$(tail -n 5 "$work/start.out"); return 1; }
}

# The daemon started (a run cannot go on without it), then no domain of the test's DOMS left
# from an earlier run.
start_daemon_clean() {
  check "libvirtd starts with the vfpool hooks installed" start_daemon
  [ $failed = 0 ] || exit 1
  local d
  for d in "${DOMS[@]}"; do v destroy "$d" >/dev/null 2>&1; v undefine "$d" >/dev/null 2>&1; done
}

# vfpool_domain_xml NAME METADATA MACHINE EMULATOR DEVICES: a TCG domain, no disk, 64 MiB, whose
# <metadata> is vfpool's; MACHINE empty: libvirt's default machine type.
vfpool_domain_xml() {
  printf "<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>64</memory>
  <metadata><vfpool:domain xmlns:vfpool='%s'>%s</vfpool:domain></metadata>
  <os><type arch='x86_64'%s>hvm</type></os>
  <devices>
    <emulator>%s</emulator>
    %s
    <memballoon model='none'/>
  </devices>
</domain>\n" "$1" "$NS" "$2" "${3:+ machine='$3'}" "$4" "$5"
}

stop_daemon() {
  bash "$here/libvirtd.sh" stop >"$work/stop.out" 2>&1 || { why=$(tail -n 3 "$work/stop.out"); return 1; }
  started_daemon=0
  local left
  left=$( { pgrep -x libvirtd; pgrep -x virtlogd; } | tr '\n' ' ')
  [ -z "$left" ] || { why="still running: pids $left"; return 1; }
}

uninstall() {
  # A refusal (exit 3: the test left a guest holding VFs or a pool running) fails the check,
  # and --force still takes vfpool off this machine.
  (cd "$root" && bash install.sh --uninstall) >"$work/uninstall.out" 2>&1 \
    || { why="exit $?: $(tail -n 3 "$work/uninstall.out")"; (cd "$root" && bash install.sh --uninstall --force) >/dev/null 2>&1; return 1; }
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
    [ ! -e "$CONF" ] || { why="$CONF is still there"; return 1; }
  fi
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  [ $failed -gt 0 ] && dump_diagnostics
  cleanup_test
  if [ $started_daemon = 1 ]; then
    check "libvirtd stopped, no libvirtd or virtlogd left" stop_daemon
  fi
  if [ $installed = 1 ]; then
    check "install.sh --uninstall removes the CLI and both hooks" uninstall
  fi
  if [ -n "$work" ]; then
    check "vfpool.conf restored as it was" restore_conf
    rm -rf "$work"
    # Directories only once harness_setup recorded whether they existed (it made $work then).
    [ $had_networks_dir = 0 ] && rmdir "$CONF_DIR/networks" 2>/dev/null
    [ $had_conf_dir = 0 ] && rmdir "$CONF_DIR" 2>/dev/null
    [ $had_net_d = 0 ] && rmdir /etc/libvirt/hooks/network.d 2>/dev/null
    [ $had_qemu_d = 0 ] && rmdir /etc/libvirt/hooks/qemu.d 2>/dev/null
  fi
  say "$passed passed, $failed failed"
  [ $failed = 0 ] && [ $rc = 0 ] && exit 0
  exit 1
}
