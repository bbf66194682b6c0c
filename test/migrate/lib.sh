# Shared by the migration proofs (sourced). Rows: `PASS name (ms)` / `FAIL name (ms): why`;
# the EXIT trap stops every process the script started (by pid), removes its work directory
# and prints `N passed, M failed` (exit 1 on any failure).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
passed=0 failed=0 why="" pids=() work=""
now_ms() { date +%s%3N; }
check() {
  local name=$1 t0; shift
  why=""; t0=$(now_ms)
  if "$@"; then passed=$((passed + 1)); echo "PASS $name ($(( $(now_ms) - t0 )) ms)"
  else failed=$((failed + 1)); echo "FAIL $name ($(( $(now_ms) - t0 )) ms)${why:+: $why}"; fi
}
setup_fail() { failed=$((failed + 1)); echo "FAIL setup: $*"; exit 1; }
finish() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if [ -n "$work" ]; then
    if [ "$failed" -gt 0 ] && [ -z "${KEEP_WORK:-}" ]; then
      for f in "$work"/*.log; do [ -s "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }; done
    fi
    [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
  fi
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
}
# need_packages CMD...: a missing tool is a failure under CI=true, a clear skip line elsewhere.
need() {
  local c missing=()
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  [ ${#missing[@]} = 0 ] && return 0
  if [ "${CI:-}" = true ]; then setup_fail "missing ${missing[*]} (scripts/install-lab-packages.sh installs them)"; fi
  echo "SKIP: missing ${missing[*]} (run scripts/install-lab-packages.sh; under CI=true this is a failure)"; passed=0; failed=0; exit 0
}
# vfpool_at HOST ARGS...: the CLI on one simulated host (src or dst). Bounded (VFPOOL_MIG_CLI_TIMEOUT,
# default 400 s: above `vfpool migrate`'s own 300 s for virsh), so a hang fails a row, not the run.
vfpool_at() {
  local h=$1; shift
  VFPOOL_HOST=sim:$work/$h/host.json VFPOOL_CONFIG_DIR=$work/$h/etc VFPOOL_STATE_DIR=$work/$h/run \
    VFPOOL_SIM_VF_DEVICE=e1000e timeout --foreground --kill-after=10 "${VFPOOL_MIG_CLI_TIMEOUT:-400}" node "$repo/dist/bin/cli.mjs" "$@"
}
qmp() { node "$repo/dist/test/migrate/qmp-cli.js" "$@"; }
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
# pci_id SOCKET QDEV_ID: "vendor:device" (hex) of the device with that id in query-pci, or nothing
pci_id() {
  qmp "$1" query-pci | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>{const walk=(ds)=>{for(const d of ds){if(d.qdev_id===process.argv[1]){console.log(d.id.vendor.toString(16).padStart(4,"0")+":"+d.id.device.toString(16).padStart(4,"0"));process.exit(0)}if(d.pci_bridge&&d.pci_bridge.devices)walk(d.pci_bridge.devices)}};for(const b of JSON.parse(s))walk(b.devices)})' "$2"
}
