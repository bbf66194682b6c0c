#!/usr/bin/env bash
# Runs a real libvirt daemon (libvirtd + virtlogd) by hand for the libvirt lab tests, the way
# ../shared/LAB.md "A real libvirt daemon" does it: no systemd, dbus or polkit; DAC only.
#
#   test/libvirt/libvirtd.sh start    install the packages (idempotent), start virtlogd and libvirtd,
#                                     wait (bounded) until `virsh -c qemu:///system version` answers
#   test/libvirt/libvirtd.sh stop     stop the daemons this script started, wait until they are gone;
#                                     safe when nothing runs
#   test/libvirt/libvirtd.sh status   exit 0 and print the pids if libvirtd answers, else exit 3
#
# libvirt discovers each driver's hooks (/etc/libvirt/hooks/DRIVER, DRIVER.d/*) when the daemon
# starts: install hooks BEFORE `start`.
#
# Which daemons are "ours": `start` writes the pids it started to $MARK. `stop` only kills those,
# so it never takes down a libvirtd somebody else runs. `start` refuses to run beside a libvirtd it
# did not start (hooks would not be rediscovered, and it is not ours to restart).
#
# Env: LIBVIRTD_START_TIMEOUT (s, default 60), LIBVIRTD_STOP_TIMEOUT (s, default 30),
#      VFPOOL_LAB_SKIP_PACKAGES=1 skips the package step.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
MARK=/run/vfpool-lab-libvirtd.pids
LIBVIRTD_PIDFILE=/run/libvirtd.pid
VIRTLOGD_PIDFILE=/run/virtlogd.pid
URI=qemu:///system
start_timeout=${LIBVIRTD_START_TIMEOUT:-60}
stop_timeout=${LIBVIRTD_STOP_TIMEOUT:-30}

log() { printf 'libvirtd.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# pid_alive PID NAME: the process exists and is the named program (not a recycled pid).
pid_alive() {
  local pid=$1 name=$2 comm
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [ "$comm" = "$name" ]
}

# pidfile_pid FILE NAME: print the pid in FILE if that process is alive and is NAME.
pidfile_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  pid=${pid//[^0-9]/}
  pid_alive "$pid" "$2" && printf '%s\n' "$pid"
}

# running NAME: pids of every running process whose comm is NAME (exact).
running() { pgrep -x "$1" || true; }

# now_ms: monotonic-enough wall clock in milliseconds, for timings.
now_ms() { date +%s%3N; }

virsh_answers() { virsh -c "$URI" version >/dev/null 2>&1; }

cmd_status() {
  local l v
  l=$(pidfile_pid "$LIBVIRTD_PIDFILE" libvirtd || true)
  v=$(pidfile_pid "$VIRTLOGD_PIDFILE" virtlogd || true)
  if [ -n "$l" ] && virsh_answers; then
    echo "libvirtd running (pid $l), virtlogd $( [ -n "$v" ] && echo "running (pid $v)" || echo "not running")$( [ -f "$MARK" ] && echo ', started by libvirtd.sh')"
    return 0
  fi
  echo "libvirtd not running${l:+ (pid $l does not answer)}"
  return 3
}

cmd_start() {
  if [ "$(id -u)" != 0 ]; then die "needs root"; fi
  if [ "${VFPOOL_LAB_SKIP_PACKAGES:-0}" != 1 ]; then
    (cd "$repo" && bash scripts/install-lab-packages.sh libvirt) || die "installing the libvirt packages failed"
  fi
  local existing
  existing=$(running libvirtd)
  if [ -n "$existing" ]; then
    if [ -f "$MARK" ] && grep -qx "libvirtd=$existing" "$MARK"; then
      log "libvirtd already running (pid $existing), started by libvirtd.sh; run 'stop' first to pick up new hooks"
      return 0
    fi
    die "a libvirtd not started by libvirtd.sh is running (pid $(echo $existing)); stop it first"
  fi
  local t0 started=() vpid lpid
  t0=$(now_ms)
  : >"$MARK"
  # Step 1: virtlogd (QEMU's stdout/stderr go through it). Reuse one that already runs.
  if ! vpid=$(pidfile_pid "$VIRTLOGD_PIDFILE" virtlogd); then
    [ -z "$(running virtlogd)" ] || die "a virtlogd without $VIRTLOGD_PIDFILE is running (pid $(echo $(running virtlogd))); stop it first"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /usr/sbin/virtlogd -d
    vpid=""
    for _ in $(seq 50); do vpid=$(pidfile_pid "$VIRTLOGD_PIDFILE" virtlogd) && break; sleep 0.1; done
    [ -n "$vpid" ] || die "virtlogd did not write $VIRTLOGD_PIDFILE"
    echo "virtlogd=$vpid" >>"$MARK"
  fi
  # Step 2: libvirtd with an empty environment, so hooks see what they would see in production.
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /usr/sbin/libvirtd -d
  # Step 3: wait, bounded, for the daemon to answer.
  local deadline=$(( $(now_ms) + start_timeout * 1000 ))
  lpid=""
  until lpid=$(pidfile_pid "$LIBVIRTD_PIDFILE" libvirtd) && virsh_answers; do
    if [ "$(now_ms)" -ge "$deadline" ]; then
      [ -n "$lpid" ] && echo "libvirtd=$lpid" >>"$MARK"
      log "libvirtd did not answer 'virsh -c $URI version' within ${start_timeout}s"
      log "last lines of /var/log/libvirt/libvirtd.log (if any):"
      tail -n 20 /var/log/libvirt/libvirtd.log 2>/dev/null >&2 || true
      cmd_stop || true
      exit 1
    fi
    sleep 0.2
  done
  echo "libvirtd=$lpid" >>"$MARK"
  echo "libvirtd started (pid $lpid) in $(( $(now_ms) - t0 )) ms"
}

# stop_pid PID NAME: SIGTERM, wait bounded, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 deadline
  pid_alive "$pid" "$name" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$(( $(now_ms) + stop_timeout * 1000 ))
  while pid_alive "$pid" "$name"; do
    if [ "$(now_ms)" -ge "$deadline" ]; then
      log "$name (pid $pid) ignored SIGTERM for ${stop_timeout}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      pid_alive "$pid" "$name" && { log "$name (pid $pid) survived SIGKILL"; return 1; }
      return 0
    fi
    sleep 0.1
  done
}

cmd_stop() {
  [ -f "$MARK" ] || { echo "nothing to stop (no daemon started by libvirtd.sh)"; return 0; }
  local rc=0 lpid vpid
  lpid=$(sed -n 's/^libvirtd=//p' "$MARK")
  vpid=$(sed -n 's/^virtlogd=//p' "$MARK")
  # libvirtd first: it holds connections to virtlogd.
  if [ -n "$lpid" ]; then stop_pid "$lpid" libvirtd || rc=1; fi
  if [ -n "$vpid" ]; then stop_pid "$vpid" virtlogd || rc=1; fi
  # A daemon killed hard leaves its pid file; remove ours only once the process is gone.
  if [ -n "$lpid" ] && ! pid_alive "$lpid" libvirtd; then rm -f "$LIBVIRTD_PIDFILE"; fi
  if [ -n "$vpid" ] && ! pid_alive "$vpid" virtlogd; then rm -f "$VIRTLOGD_PIDFILE"; fi
  [ $rc = 0 ] && rm -f "$MARK"
  echo "stopped${lpid:+ libvirtd (pid $lpid)}${vpid:+ virtlogd (pid $vpid)}"
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
