#!/usr/bin/env bash
# `npm run test:lab` (after `npm run build`): the whole real-kernel lab, three guest boots.
#   probe   test/lab/probe-kernel.sh: the raw kernel facts vfpool is built on, on a PF as it
#           comes up (down, no VFs)
#   suites  test/lab/guest-suites.sh: the Host suite, the activation suite and the hook flow,
#           vfpool's own code on the real igb PF
#   libvirt test/lab/libvirt-guest.sh: vfpool installed with install.sh under a real libvirtd
#           with its default qemu.conf; guests whose <emulator> is vfpool's wrapper get a VF of
#           the igb PF (hostdev metadata, hybrid interface), read back from the nested QEMU
# Each boot gets a fresh guest, so no SR-IOV state leaks from one to the other; on a machine with
# two or more cores they run side by side (each TCG guest uses one host thread; probe is short,
# so at most two run at once for most of the time). Then it prints one PASS/FAIL line per check,
# the wall time, and last exactly "N passed, M failed"; exit 1 on any failure.
# Outputs: test/lab/.out/{probe,suites,libvirt}/ (or $VFPOOL_LAB_OUTDIR).
# Env: VFPOOL_LAB_PARALLEL=0|1 (default: 1 with >= 2 cores); run-in-guest.sh's VFPOOL_LAB_*.
#   bash test/lab/run-lab.sh [BOOT...]   only these boots (probe, suites, libvirt; default all),
#                                        and the table of only these
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${VFPOOL_LAB_OUTDIR:-$here/.out}
start=$SECONDS
boots=("$@")
[ ${#boots[@]} -gt 0 ] || boots=(probe suites libvirt)
for b in "${boots[@]}"; do
  case $b in probe|suites|libvirt) ;; *) echo "run-lab: unknown boot '$b': expected probe, suites or libvirt" >&2; exit 2;; esac
done
wanted() { [[ " ${boots[*]} " == *" $1 "* ]]; }
mkdir -p "$out" || { echo "run-lab: cannot create $out" >&2; exit 1; }
rm -f "$out/probe.exit" "$out/suites.exit" "$out/libvirt.exit"

# The guests run vfpool from a copy of the build taken now, not from dist/ itself: they read the
# host's files over 9p for minutes, and a rebuild meanwhile (`rm -rf dist` first) would hand a
# suite, install.sh or a hook half a dist/. The copy is laid out like the repository (what
# install.sh and test/helpers/spawn.ts's REPO expect), node_modules linked, not copied.
snap=$out/snap
rm -rf "$snap" "$out/libvirt-snap" && mkdir -p "$snap" \
  && cp -R "$repo/dist" "$repo/hooks" "$repo/qemu-args" "$repo/systemd" "$repo/install.sh" "$repo/package.json" "$snap/" \
  && ln -s "$repo/node_modules" "$snap/node_modules" \
  || { echo "FAIL  lab  snapshot of the build into $snap (run npm run build first)"; echo "0 passed, 1 failed"; exit 1; }

boot() { # NAME SCRIPT TIMEOUT_SECS [KERNEL_APPEND]: the script runs in the snapshot
  local name=$1 script=$2 timeout=$3 append=${4:-}
  # A fresh OUTDIR: results left by an earlier run must never stand in for this one's.
  rm -rf "${out:?}/$name"
  echo "run-lab: booting $name ($script)"
  VFPOOL_LAB_APPEND="${VFPOOL_LAB_APPEND:-}${append:+ $append}" \
    bash "$here/run-in-guest.sh" --timeout "$timeout" --cwd "$snap" "$script" "$out/$name" 2>&1 | sed -u "s/^/[$name] /"
  echo "${PIPESTATUS[0]}" >"$out/$name.exit"
  echo "run-lab: $name exited $(cat "$out/$name.exit") after $(( SECONDS - start )) s"
}

parallel=${VFPOOL_LAB_PARALLEL:-}
[ -n "$parallel" ] || { [ "$(nproc)" -ge 2 ] && parallel=1 || parallel=0; }
# Timeouts: ~3-4x what a 2-core machine needs with three guests at once (probe ~175 s,
# suites ~440 s, libvirt ~435 s before its part (c)); the libvirt boot's is larger since (c) added
# a guest start: on a host loaded by other work (load ~20 on 2 cores) it ran past 1800 s. The
# probe boot's includes the net-start bench (ten rounds of four arms, ~20 s a round under TCG).
# libvirt's per-domain mount namespace fails in a chroot: that boot's script runs as PID 1 of
# the shared root (vfpool.switchroot=1, see initramfs-init.sh).
pids=()
for b in "${boots[@]}"; do
  case $b in
    probe) args=("$here/probe-boot.sh" 1800) ;;
    suites) args=("$here/guest-suites.sh" 1500) ;;
    libvirt) args=("$here/libvirt-guest.sh" 3000 vfpool.switchroot=1) ;;
  esac
  if [ "$parallel" = 1 ]; then boot "$b" "${args[@]}" & pids+=($!); else boot "$b" "${args[@]}"; fi
done
[ ${#pids[@]} = 0 ] || wait "${pids[@]}"

echo
node "$here/lab-report.mjs" "$out" "$(( SECONDS - start ))" "${boots[@]}"
