# The per-service command backup-NAME: one body for the NixOS package
# (writeShellApplication) and the plain hosts' wrapper. The lines above it
# set name, worker and config, shell-quoted; nothing from the spec is
# interpolated into this text. Every command reads the same JSON config as
# the unit, and credentials as the worker does outside the unit: from the
# paths in the config ($CREDENTIALS_DIRECTORY is the unit's only).
unset CREDENTIALS_DIRECTORY
unit="$name-backup.service"
me="backup-$name"

usage() {
	cat <<USAGE
Usage: $me [COMMAND [ARGS...]]

Backups of $name, with the config and credentials of $unit.
Without a command: status.

Commands:
  status [--json]         last run, next run, archives per destination
  list [--verify]         every archive per destination
  verify [ARGS...]        check archives (default: the newest per destination)
  prune --dry-run         what retention would delete (prune --now deletes it)
  restore --archive PATH [--target DIR | --yes] [ARGS...]
                          restore an archive ($me restore --help)
  run                     start $unit and follow its journal until it ends
  run --dry-run           what a run would stop, write and prune; changes nothing
  drill [--destination DEST]
                          restore the newest archive of each destination into a
                          scratch directory and compare it with the backup's manifest
  help                    this text

Every command but help needs root: sudo $me COMMAND
USAGE
}

# needRoot stops here, saying so, unless run as root: the config's
# secrets, the state directory and the archives are root-only.
needRoot() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "$me $1: needs root (the state directory, the archives and the credentials are root-only); run: sudo $me $1" >&2
		exit 2
	fi
}

# runWorker runs backup-worker COMMAND with the unit's config.
runWorker() {
	local cmd="$1"
	shift
	needRoot "$cmd"
	exec "$worker" "$cmd" --config "$config" "$@"
}

# follow starts the unit (systemd runs the backup, never a second copy
# beside it: a run already in progress is joined) and shows its journal
# until the unit has finished, then the result and the status.
follow() {
	needRoot run
	local since jpid rc=0 code result
	since="@$(date +%s)"
	journalctl --follow --output=cat --unit="$unit" --since="$since" &
	jpid=$!
	trap 'kill "$jpid" 2>/dev/null || true' EXIT
	# Ctrl-C stops following, not the backup: it runs in the unit.
	trap 'echo "$me run: stopped following; the backup goes on in $unit (journalctl -fu $unit)" >&2; exit 130' INT
	systemctl start -- "$unit" || rc=$?
	# The journal may lag the unit's last lines by a moment.
	sleep 1
	kill "$jpid" 2>/dev/null || true
	wait "$jpid" 2>/dev/null || true
	trap - EXIT INT
	code="$(systemctl show -p ExecMainStatus --value -- "$unit")" || code=""
	result="$(systemctl show -p Result --value -- "$unit")" || result="unknown"
	echo "$unit: result $result, exit status ${code:-unknown}"
	"$worker" status --config "$config" || true
	case "$code" in
	'' | *[!0-9]*) exit "$rc" ;;
	*) exit "$code" ;;
	esac
}

cmd="${1:-status}"
[ $# -gt 0 ] && shift
case "$cmd" in
status | list | verify | restore | drill)
	runWorker "$cmd" "$@"
	;;
prune)
	case "${1:-}" in
	--dry-run) shift && runWorker prune --dry-run "$@" ;;
	--now) shift && runWorker prune "$@" ;;
	*)
		echo "$me prune: say --dry-run (show what would be deleted) or --now (delete it)" >&2
		exit 2
		;;
	esac
	;;
run)
	if [ "${1:-}" = --dry-run ]; then
		shift
		runWorker run --dry-run "$@"
	fi
	if [ $# -gt 0 ]; then
		echo "$me run: unexpected arguments: $*" >&2
		exit 2
	fi
	follow
	;;
help | -h | --help)
	usage
	;;
*)
	echo "$me: unknown command \"$cmd\"" >&2
	usage >&2
	exit 2
	;;
esac
