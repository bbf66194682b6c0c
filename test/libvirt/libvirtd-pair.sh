#!/usr/bin/env bash
# Private libvirt daemons for migration tests: each instance is a libvirtd + virtlogd in its own
# mount namespace (tmpfs on /run; private copies bind-mounted over /etc/libvirt, /var/lib/libvirt,
# /var/cache/libvirt, /var/log/libvirt), with its own host UUID (libvirt refuses to migrate a
# domain to a host with its own UUID), listening on 127.0.0.1:PORT without auth. Two of them are
# two "hosts" on one machine (../shared/LAB.md "Migration on one machine"), and neither collides
# with a libvirtd on the default paths.
#
#   test/libvirt/libvirtd-pair.sh start NAME PORT   start instance NAME (waits, bounded, until it answers)
#   test/libvirt/libvirtd-pair.sh stop NAME         stop what `start NAME` started (by its pid files); safe when nothing runs
#   test/libvirt/libvirtd-pair.sh status NAME       exit 0 if it answers, else 3
#   test/libvirt/libvirtd-pair.sh uri NAME          print qemu+tcp://127.0.0.1:PORT/system
#
# State: /tmp/vfpool-libvirtd-NAME/ (etc, lib, cache, log, pid files, port). Hooks: put them in
# /tmp/vfpool-libvirtd-NAME/etc/hooks/ BEFORE start (libvirt finds hooks at daemon start).
# Env: LIBVIRTD_START_TIMEOUT (s, default 60). Root only.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
start_timeout=${LIBVIRTD_START_TIMEOUT:-60}
die() { echo "libvirtd-pair.sh: $*" >&2; exit 1; }
inst_dir() { [[ $1 =~ ^[a-z][a-z0-9-]{0,15}$ ]] || { echo "libvirtd-pair.sh: instance name '$1' must be [a-z][a-z0-9-]*" >&2; exit 2; }; echo "/tmp/vfpool-libvirtd-$1"; }
pid_of() { local p; p=$(cat "$1" 2>/dev/null) || return 1; p=${p//[^0-9]/}; [ -n "$p" ] && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ] && echo "$p"; }
uri_of() { echo "qemu+tcp://127.0.0.1:$(cat "$(inst_dir "$1")/port")/system"; }
# Every virsh call here is bounded: a daemon that stopped answering must not hang a stop or a
# purge (they run from the tests' EXIT traps) beyond what it takes to kill it.
answers() { timeout --foreground --kill-after=5 20 virsh -c "$(uri_of "$1")" version >/dev/null 2>&1; }

cmd_start() {
  local name=$1 port=$2 dir
  [ "$(id -u)" = 0 ] || die "needs root"
  [[ $port =~ ^[0-9]{4,5}$ ]] || { echo "libvirtd-pair.sh: port '$port' is not a TCP port" >&2; exit 2; }
  dir=$(inst_dir "$name")
  if pid_of "$dir/libvirtd.pid" libvirtd >/dev/null; then die "instance $name already runs (pid $(cat "$dir/libvirtd.pid")); stop it first"; fi
  mkdir -p "$dir"
  echo "$port" >"$dir/port"
  # A caller may have made etc/ first (to put hooks in etc/hooks before start).
  [ -d "$dir/etc" ] || cp -a /etc/libvirt "$dir/etc"
  [ -d "$dir/lib" ] || cp -a /var/lib/libvirt "$dir/lib"
  [ -d "$dir/cache" ] || cp -a /var/cache/libvirt "$dir/cache"
  mkdir -p "$dir/log"
  if ! grep -q "^# libvirtd-pair.sh instance" "$dir/etc/libvirtd.conf"; then
    local uuid; uuid=$(cat /proc/sys/kernel/random/uuid)
    cat >>"$dir/etc/libvirtd.conf" <<CONF

# libvirtd-pair.sh instance $name
listen_tls = 0
listen_tcp = 1
listen_addr = "127.0.0.1"
tcp_port = "$port"
auth_tcp = "none"
host_uuid = "$uuid"
CONF
    # libvirt refuses migration_address/migration_host = 127.0.0.1 in qemu.conf ("must not be
    # the address of the local machine"): callers pass `--listen-address 127.0.0.1
    # --migrateuri tcp://127.0.0.1` to virsh migrate instead (test/migrate/libvirt-pair.test.sh).
  fi
  local t0; t0=$(date +%s%3N)
  # The namespace lives as long as the daemons in it; nothing of it is visible outside.
  unshare -m --propagation private -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DIR="$dir" bash -euc '
    mount -t tmpfs -o mode=0755 tmpfs /run
    mount --bind "$DIR/etc" /etc/libvirt
    mount --bind "$DIR/lib" /var/lib/libvirt
    mount --bind "$DIR/cache" /var/cache/libvirt
    mount --bind "$DIR/log" /var/log/libvirt
    /usr/sbin/virtlogd -d -p "$DIR/virtlogd.pid"
    /usr/sbin/libvirtd -d --listen -p "$DIR/libvirtd.pid"
  ' || die "starting instance $name failed (see $dir/log/libvirtd.log)"
  local deadline=$(( $(date +%s) + start_timeout ))
  local waited=0
  until pid_of "$dir/libvirtd.pid" libvirtd >/dev/null && answers "$name"; do
    waited=$((waited + 1))
    # -d returns once the daemon forked; one that died in its initialisation is not waited for.
    if [ "$(date +%s)" -ge "$deadline" ] || { [ $waited -gt 25 ] && ! pid_of "$dir/libvirtd.pid" libvirtd >/dev/null; }; then
      tail -n 20 "$dir/log/libvirtd.log" >&2 2>/dev/null || true
      cmd_stop "$name" || true
      die "instance $name did not answer on $(uri_of "$name") within ${start_timeout}s"
    fi
    sleep 0.2
  done
  echo "libvirtd instance $name (pid $(pid_of "$dir/libvirtd.pid" libvirtd)) on $(uri_of "$name") in $(( $(date +%s%3N) - t0 )) ms"
}

stop_pid() { # stop_pid PID NAME: TERM, wait 30 s, KILL
  local pid=$1 n=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 300); do [ "$(cat /proc/$pid/comm 2>/dev/null)" = "$n" ] || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
  local name=$1 dir p; dir=$(inst_dir "$name")
  [ -d "$dir" ] || { echo "instance $name: nothing to stop"; return 0; }
  # Domains first: a QEMU of this instance must not outlive its daemon.
  if answers "$name"; then
    for d in $(timeout --foreground --kill-after=5 30 virsh -q -c "$(uri_of "$name")" list --name 2>/dev/null); do
      timeout --foreground --kill-after=5 60 virsh -q -c "$(uri_of "$name")" destroy "$d" >/dev/null 2>&1 || true
    done
  fi
  local ns=""
  if p=$(pid_of "$dir/libvirtd.pid" libvirtd); then ns=$(readlink "/proc/$p/ns/mnt" 2>/dev/null || true); stop_pid "$p" libvirtd; fi
  if p=$(pid_of "$dir/virtlogd.pid" virtlogd); then stop_pid "$p" virtlogd; fi
  # What a daemon that stopped answering could not destroy (a QEMU, a hook): every process left in
  # the instance's mount namespace is the instance's.
  if [ -n "$ns" ] && [ "$ns" != "$(readlink /proc/self/ns/mnt)" ]; then
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
      echo "instance $name: killing what is left in its namespace: ${p#/proc/} $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-120)"
      kill -KILL "${p#/proc/}" 2>/dev/null || true
    done
  fi
  rm -f "$dir/libvirtd.pid" "$dir/virtlogd.pid"
  echo "instance $name stopped"
}

case "${1:-}" in
  start) [ $# = 3 ] || { echo "usage: $0 start NAME PORT" >&2; exit 2; }; cmd_start "$2" "$3" ;;
  stop) [ $# = 2 ] || { echo "usage: $0 stop NAME" >&2; exit 2; }; cmd_stop "$2" ;;
  status) [ $# = 2 ] || exit 2; d=$(inst_dir "$2"); if pid_of "$d/libvirtd.pid" libvirtd >/dev/null && answers "$2"; then echo "instance $2 runs on $(uri_of "$2")"; else echo "instance $2 not running"; exit 3; fi ;;
  uri) [ $# = 2 ] || exit 2; inst_dir "$2" >/dev/null; uri_of "$2" ;;
  purge) [ $# = 2 ] || exit 2; cmd_stop "$2"; rm -rf "$(inst_dir "$2")" ;;
  *) echo "usage: $0 start NAME PORT | stop NAME | status NAME | uri NAME | purge NAME" >&2; exit 2 ;;
esac
