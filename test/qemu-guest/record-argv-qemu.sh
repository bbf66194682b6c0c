#!/bin/sh
# Set as VFPOOL_QEMU for the failover boot: writes the argv vfpool's wrapper exec'd (one element
# per line) to $VFPOOL_TEST_ARGV_FILE, then execs the real QEMU ($VFPOOL_TEST_REAL_QEMU) with it
# unchanged, so run-qemu.sh can show what the generator added to the person's command line.
[ -n "${VFPOOL_TEST_ARGV_FILE:-}" ] && [ -n "${VFPOOL_TEST_REAL_QEMU:-}" ] || {
  echo "record-argv-qemu: set VFPOOL_TEST_ARGV_FILE and VFPOOL_TEST_REAL_QEMU" >&2; exit 127; }
# A probe of the wrapper's (`-device virtio-net-pci,help`, `-version`) must not overwrite the boot's argv.
case " $* " in *" -kernel "*) printf '%s\n' "$@" >"$VFPOOL_TEST_ARGV_FILE" ;; esac
exec "$VFPOOL_TEST_REAL_QEMU" "$@"
