#!/usr/bin/env bash
# Installs vfpool: the built tool under PREFIX/lib/vfpool, the CLI as PREFIX/bin/vfpool, the
# QEMU wrapper as PREFIX/bin/vfpool-qemu (a domain's <emulator>), libvirt's hooks as links in
# /etc/libvirt/hooks/{network,qemu}.d/vfpool, the man page, bash completion, and
# vfpool-reconcile.service (runs `vfpool reconcile` whenever the libvirt daemon starts). Idempotent.
#
#   bash install.sh [--prefix /usr/local] [--dest-dir DIR] [--uninstall [--force]]
#
# --dest-dir stages everything under DIR for packaging (links still point at PREFIX).
# --uninstall refuses while guests hold VFs or pools run (nothing would give the VFs back);
# --force removes vfpool anyway.
# Run `npm ci && npm run build` first. libvirt finds a driver's hooks when the daemon starts:
# restart libvirtd after the first install.
set -euo pipefail
# cp, mkdir and `cat >` below create with the caller's umask, and a hardened root's is 027 or
# 077 (sudo adds the invoking user's): the install would then be root's alone, while the QEMU
# wrapper runs as the domain's QEMU user (libvirt-qemu), which must traverse the install, read
# its bundle and read vfpool.conf. Modes that must be tighter are set explicitly.
umask 022

prefix=/usr/local
destdir=
uninstall=0
force=0
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory (e.g. --prefix /usr/local)" >&2; exit 2; }
      prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    # An empty one (\`--dest-dir "$PKGDIR"\` with PKGDIR unset) would install into the running
    # system, hooks and all, instead of staging: refused.
    --dest-dir | --dest-dir=*)
      if [ "$1" = --dest-dir ]; then
        [ $# -ge 2 ] || { echo "install.sh: --dest-dir needs a directory (e.g. --dest-dir /tmp/stage)" >&2; exit 2; }
        destdir=$2; shift 2
      else destdir=${1#*=}; shift; fi
      [ -n "$destdir" ] || { echo "install.sh: --dest-dir is empty: give the staging directory, or leave the option out to install into this system" >&2; exit 2; } ;;
    --uninstall) uninstall=1; shift ;;
    --force) force=1; shift ;;
    -h | --help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (expected --prefix DIR, --dest-dir DIR, --uninstall, --force)" >&2; exit 2 ;;
  esac
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be an absolute path, got '$prefix'" >&2; exit 2 ;; esac
# The prefix is written into the hook shim (below), which root runs for libvirt: a path of
# plain characters only, so it stays a path when the shell reads it back.
case $prefix in *[!A-Za-z0-9_./+-]*) echo "install.sh: --prefix '$prefix' has characters other than letters, digits and _ . / + -: choose a plain path" >&2; exit 2 ;; esac

# The Node that runs vfpool, written below into the hook shim, the QEMU wrapper and the unit:
# libvirt runs hooks with its own PATH and systemd runs units with systemd's, and neither holds
# a Node installed by nvm or from a tarball under /opt, nor can either be given VFPOOL_NODE.
node=
if [ $uninstall = 0 ]; then
  node=$(command -v node) || { echo "install.sh: node is not in PATH ($PATH): install Node.js >= 20.5, or run install.sh with its directory in PATH" >&2; exit 1; }
  case $node in /*) ;; *) node=$(cd "$(dirname "$node")" && pwd)/${node##*/} ;; esac
  case $node in *[!A-Za-z0-9_./+-]*) echo "install.sh: node is at '$node', a path with characters other than letters, digits and _ . / + -: install it under a plain path" >&2; exit 2 ;; esac
  # Debian 12's own nodejs is 18: installed with it, every hook, wrapper and CLI run would fail
  # later, inside libvirt, instead of here with the version.
  version=$("$node" -p 'process.versions.node' 2>/dev/null) || version=
  major=${version%%.*} minor=${version#*.}; minor=${minor%%.*}
  if ! [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || [ "$major" -lt 20 ] || { [ "$major" = 20 ] && [ "$minor" -lt 5 ]; }; then
    echo "install.sh: $node is Node.js ${version:-(it did not say its version)}, and vfpool needs >= 20.5: install a newer one (Debian 12's nodejs package is 18: NodeSource's or a tarball from nodejs.org), first in PATH" >&2
    exit 1
  fi
fi

src=$(cd "$(dirname "$0")" && pwd)
libdir=$prefix/lib/vfpool
hookdir=/etc/libvirt/hooks
confdir=/etc/vfpool
unitdir=/etc/systemd/system
unit=vfpool-reconcile.service
mandir=$prefix/share/man/man1
compdir=$prefix/share/bash-completion/completions

# A setting as vfpool.conf gives it (the last KEY=value line, as vfpool reads it), else the
# default: where the hooks, which libvirt runs without this shell's environment, keep things.
conf_setting() {
  local key=$1 value= line
  if [ -f "$destdir$confdir/vfpool.conf" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
      if [[ $line =~ ^[[:space:]]*$key[[:space:]]*=[[:space:]]*(.*[^[:space:]])?[[:space:]]*$ ]]; then
        value=${BASH_REMATCH[1]}
        case $value in \"*\" | \'*\') [ ${#value} -ge 2 ] && value=${value:1:${#value}-2} ;; esac
      fi
    done <"$destdir$confdir/vfpool.conf"
  fi
  printf '%s' "${value:-$2}"
}

if [ $uninstall = 1 ]; then
  # Removed while guests hold VFs or pools run, vfpool leaves those VFs as it set them (guest
  # MACs and VLANs, vfio-pci) with nothing left to give them back: libvirt's release and
  # network stop find no hook. So ask the installed vfpool first, under vfpool.conf's settings.
  cli=$destdir$libdir/dist/bin/cli.cjs
  if [ $force = 0 ] && [ -f "$cli" ] && node=$(command -v node); then
    # stdout alone is the JSON (a warning on stderr must not spoil it); stderr says why not.
    status_err=$(mktemp)
    status=$("$node" "$cli" status --json 2>"$status_err") || status=
    busy=$(printf '%s' "$status" | VFPOOL_STATUS_ERR=$(head -n 1 "$status_err") "$node" -e '
      let text = "";
      process.stdin.on("data", (d) => (text += d)).on("end", () => {
        let s;
        try { s = JSON.parse(text); } catch { console.log(`cannot tell whether vfpool is in use: \`vfpool status --json\` failed (${process.env.VFPOOL_STATUS_ERR || "no output"})`); return; }
        const domains = [...new Set(s.pfs.flatMap((p) => p.vfs).filter((v) => v.owner && v.owner.via === "vfpool").map((v) => v.owner.domain))];
        const pools = s.pools.filter((p) => p.active).map((p) => p.name);
        const what = [domains.length && `holds VFs for domain(s) ${domains.join(", ")}`, pools.length && `runs pool(s) ${pools.join(", ")}`].filter(Boolean);
        if (what.length) console.log(`vfpool still ${what.join(" and ")}: stop those guests and pools first (vfpool net-destroy POOL, or virsh net-destroy for a libvirt network) so their VFs are given back`);
      });') || true
    rm -f "$status_err"
    if [ -n "$busy" ]; then echo "install.sh: $busy; or uninstall with --force" >&2; exit 3; fi
  fi
  if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then systemctl disable --now "$unit" >/dev/null 2>&1 || true; fi
  rm -f "$destdir$hookdir/network.d/vfpool" "$destdir$hookdir/qemu.d/vfpool" "$destdir$prefix/bin/vfpool" "$destdir$prefix/bin/vfpool-qemu"
  rm -f "$destdir$unitdir/$unit" "$destdir$mandir/vfpool.1" "$destdir$compdir/vfpool"
  rm -rf "$destdir$libdir" "$destdir$prefix/lib"/vfpool.*
  echo "vfpool removed from $prefix (pool definitions in $confdir and the VF history in $(conf_setting VFPOOL_JOURNAL_DIR /var/lib/vfpool) are kept)"
  exit 0
fi

if [ ! -f "$src/dist/bin/cli.cjs" ] || [ ! -f "$src/dist/man/vfpool.1" ]; then
  echo "install.sh: $src/dist is missing: run \`npm ci && npm run build\` first" >&2
  exit 1
fi

# The state and history directories the hooks will use. One that exists and is another user's
# is refused, not chowned: vfpool refuses it too (root's hooks would act on what that user
# planted in it), and only a person can tell whether what is in it may be kept.
state_dir=$(conf_setting VFPOOL_STATE_DIR /run/vfpool)
journal_dir=$(conf_setting VFPOOL_JOURNAL_DIR /var/lib/vfpool)
if [ -z "$destdir" ]; then
  for d in "$state_dir" "$journal_dir"; do
    case $d in /*) ;; *) echo "install.sh: $confdir/vfpool.conf names '$d', a relative directory, which vfpool refuses: give an absolute path" >&2; exit 1 ;; esac
    if [ -e "$d" ] || [ -L "$d" ]; then
      owner=$(stat -c %u -- "$d")
      if [ "$owner" != 0 ]; then
        echo "install.sh: $d is owned by uid $owner, not root, and vfpool refuses a directory another user controls: check what is in it, then chown 0:0 $d (or remove it), and run install.sh again" >&2
        exit 1
      fi
    fi
  done
fi

# Each install is a directory of its own (lib/vfpool.STAMP) behind the symlink lib/vfpool,
# switched by one rename: a hook that libvirt runs meanwhile sees the old install or the new
# one, never half of one, and never none.
release=vfpool.$(date +%Y%m%d%H%M%S).$$
stage=$destdir$prefix/lib/$release
mkdir -p "$stage/dist"
# The bundles in dist/bin carry their dependencies (scripts/bundle.mjs): no node_modules needed.
cp -R "$src/dist/bin" "$stage/dist/"
cp -R "$src/hooks" "$src/qemu-args" "$src/package.json" "$stage/"
# The hook shim and the QEMU wrapper (which libvirt runs through the bin/vfpool-qemu link) learn
# where they are installed here, so that no hook call or guest start forks readlink to find out.
for f in hooks/vfpool-hook qemu-args/vfpool-qemu; do
  sed -i -e "s|^vfpool_home=\$|vfpool_home=$libdir|" -e "s|^vfpool_node=\$|vfpool_node=$node|" "$stage/$f"
  grep -qx "vfpool_home=$libdir" "$stage/$f" && grep -qx "vfpool_node=$node" "$stage/$f" \
    || { echo "install.sh: could not write the install path and the node path into $stage/$f" >&2; exit 1; }
done
# The CLI too (\`sudo vfpool\`, cron and scripts run it with a PATH that may hold no such Node).
for f in cli.cjs cli.mjs; do
  sed -i "1s|^#!/usr/bin/env node\$|#!$node|" "$stage/dist/bin/$f"
  [ "$(head -n 1 "$stage/dist/bin/$f")" = "#!$node" ] \
    || { echo "install.sh: could not write the node path into $stage/dist/bin/$f" >&2; exit 1; }
done
chmod 0755 "$stage/dist/bin/"*.mjs "$stage/dist/bin/cli.cjs" "$stage/dist/bin/"*-hook.cjs "$stage/hooks/vfpool-hook" "$stage/qemu-args/vfpool-qemu"
ln -sfn "$release" "$destdir$libdir.tmp"
# The install this one replaces stays until the next install: a hook, reconcile or migration
# of it still running loads files of its own directory as it goes (its bundle requires
# ./execa.cjs when it first runs ip or virsh), and removed under it that process failed midway,
# a VF half restored. Older installs than that one are removed.
previous=$(readlink "$destdir$libdir" 2>/dev/null) || previous=
# An install from before vfpool used a link is a directory, which a rename cannot replace.
if [ -d "$destdir$libdir" ] && [ ! -L "$destdir$libdir" ]; then rm -rf "$destdir$libdir"; fi
mv -T "$destdir$libdir.tmp" "$destdir$libdir"
for old in "$destdir$prefix/lib"/vfpool.*; do
  if [ "$old" != "$stage" ] && [ "${old##*/}" != "${previous##*/}" ] && [ -d "$old" ]; then rm -rf "$old"; fi
done

mkdir -p "$destdir$prefix/bin"
# cli.cjs: the CLI compiled with its V8 code cache (cli.mjs runs the same, after Node's ES-module loader).
ln -sfn "$libdir/dist/bin/cli.cjs" "$destdir$prefix/bin/vfpool"
ln -sfn "$libdir/qemu-args/vfpool-qemu" "$destdir$prefix/bin/vfpool-qemu"

new_hooks=0
for driver in network qemu; do
  mkdir -p "$destdir$hookdir/$driver.d"
  # Replaced only when it leads elsewhere: `vfpool doctor` compares the link's age with the
  # libvirt daemon's start, and a reinstall must not make a running daemon look stale.
  if [ "$(readlink "$destdir$hookdir/$driver.d/vfpool" 2>/dev/null)" != "$libdir/hooks/$driver" ]; then
    [ -e "$destdir$hookdir/$driver.d/vfpool" ] || new_hooks=1
    ln -sfn "$libdir/hooks/$driver" "$destdir$hookdir/$driver.d/vfpool"
  fi
done

install -d "$destdir$mandir" "$destdir$compdir" "$destdir$unitdir"
install -m 0644 "$src/dist/man/vfpool.1" "$destdir$mandir/vfpool.1"
# yargs writes the completion script for the command's own declarations.
SHELL=/bin/bash "$node" "$src/dist/bin/cli.cjs" completion >"$destdir$compdir/vfpool"
sed -e "s#@PREFIX@#$prefix#g" -e "s#@NODE@#$node#g" "$src/systemd/$unit" >"$destdir$unitdir/$unit"
chmod 0644 "$destdir$unitdir/$unit"
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable "$unit" >/dev/null
fi

mkdir -p "$destdir$confdir/networks"
if [ ! -e "$destdir$confdir/vfpool.conf" ]; then
  cat >"$destdir$confdir/vfpool.conf" <<'CONF'
# vfpool settings, KEY=value (the environment wins over this file). libvirt runs hooks with
# an almost empty environment, so this file is how they learn non-default settings.
#VFPOOL_STATE_DIR=/run/vfpool
#VFPOOL_HOST=linux
#VFPOOL_IP=/usr/sbin/ip
#VFPOOL_QEMU=/usr/bin/qemu-system-x86_64
#VFPOOL_JOURNAL_DIR=/var/lib/vfpool
CONF
  chmod 0644 "$destdir$confdir/vfpool.conf"
fi
if [ -z "$destdir" ]; then
  # 0711: the QEMU wrapper runs as the QEMU user and must reach qemu/NAME/ (its own 0700
  # directory); it may traverse the state directory, never list or read it.
  install -d -m 0711 "$state_dir"
  install -d -m 0700 "$journal_dir"
fi

# Which build: what \`vfpool --version\` says (the build stamps it: scripts/bundle.mjs).
echo "vfpool $(cat "$stage/dist/bin/version" 2>/dev/null || echo '(version unknown)') installed in $libdir; hooks linked in $hookdir/network.d and $hookdir/qemu.d"
if [ $new_hooks = 1 ] && [ -z "$destdir" ]; then
  echo "note: libvirt looks for hooks when it starts: restart libvirtd once so it finds vfpool's"
fi
