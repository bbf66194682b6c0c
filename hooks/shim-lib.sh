# Sourced by vfpool's hook shims, which set vfpool_self to their own resolved path first. POSIX sh, no forks on the common path: libvirt runs every
# hook for every guest and network and waits for each, so a call vfpool has nothing to do
# with must cost what a shell script costs (DESIGN.md, speed budget).
#
# Security: hooks run as root with input from XML. Nothing read here is evaluated: the conf
# file is matched line by line, names are matched against a safe character set before they
# are used in a path, and stdin is only compared as a string.

# vfpool_settings: sets vfpool_config_dir and vfpool_state_dir the way src/config/settings.ts
# does (environment first, then $VFPOOL_CONFIG_DIR/vfpool.conf or /etc/vfpool/vfpool.conf).
vfpool_settings() {
  vfpool_config_dir=${VFPOOL_CONFIG_DIR:-/etc/vfpool}
  vfpool_state_dir=${VFPOOL_STATE_DIR:-}
  _conf=$vfpool_config_dir/vfpool.conf
  _file_config_dir=
  _file_state_dir=
  if [ -r "$_conf" ]; then
    while IFS= read -r _line || [ -n "$_line" ]; do
      _key=${_line%%=*}
      _value=${_line#*=}
      case $_value in \"*\") _value=${_value#\"}; _value=${_value%\"} ;; \'*\') _value=${_value#\'}; _value=${_value%\'} ;; esac
      case $_key in
        VFPOOL_STATE_DIR) _file_state_dir=$_value ;;
        VFPOOL_CONFIG_DIR) _file_config_dir=$_value ;;
      esac
    done <"$_conf"
  fi
  [ -n "${VFPOOL_CONFIG_DIR:-}" ] || [ -z "$_file_config_dir" ] || vfpool_config_dir=$_file_config_dir
  [ -n "$vfpool_state_dir" ] || vfpool_state_dir=${_file_state_dir:-/run/vfpool}
}

# vfpool_safe_name NAME: true if NAME may stand in a file name (same rule as parseObjectName).
vfpool_safe_name() {
  case $1 in
    '' | .* | *[!A-Za-z0-9_.+:-]*) return 1 ;;
  esac
  return 0
}

# vfpool_exec_node ENTRY ARGS...: runs dist/src/entry/ENTRY.js with the captured stdin.
vfpool_exec_node() {
  _entry=$1
  shift
  _root=${vfpool_self%/*/*}
  _node=${VFPOOL_NODE:-}
  if [ -z "$_node" ]; then
    for _n in /usr/bin/node /usr/local/bin/node; do
      [ -x "$_n" ] && _node=$_n && break
    done
  fi
  [ -n "$_node" ] || _node=$(command -v node) || { echo "vfpool: node not found (set VFPOOL_NODE in the environment)" >&2; exit 1; }
  # A here-document, not a pipe: `printf | exec node` would exec in a pipeline subshell and the
  # shim would go on to `exit 0`, hiding node's exit status from libvirt. The expansion of
  # $vfpool_input is data: its contents are not expanded again.
  exec "$_node" "$_root/dist/src/entry/$_entry.js" "$@" <<VFPOOL_STDIN
$vfpool_input
VFPOOL_STDIN
}
