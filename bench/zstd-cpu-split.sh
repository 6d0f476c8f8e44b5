#!/bin/sh
# zstd-cpu-split.sh BIN_A BIN_B [REPS] — CPU-seconds (user+sys of the
# process tree, /usr/bin/time) of `backup-worker run` of the corpus as
# tar.zst to a clean destination, BIN_A and BIN_B alternating REPS times
# (default 3), then the native pipeline `tar -I 'zstd -T2' -cf` REPS times.
# zstd on PATH is wrapped to log each zstd process's own CPU, so every run
# is split into the compressor, the stream check's zstd and the worker
# (the total minus both). CORPUS (default bench/out/corpus-1GiB) is read,
# WORK (default a new temp dir) is written. Used for docs/performance.md,
# "zstdcheck"; measure CPU, not wall time, on a shared machine.
set -eu
a=$(realpath "$1") b=$(realpath "$2") reps=${3:-3}
corpus=$(realpath "${CORPUS:-bench/out/corpus-1GiB}")
work=${WORK:-$(mktemp -d)}
real=$(command -v zstd)
mkdir -p "$work/wrap"
cat >"$work/wrap/zstd" <<WRAP
#!/bin/sh
exec /usr/bin/time -a -o "\$ZSTD_TIMES" -f "%U %S \$*" $real "\$@"
WRAP
chmod +x "$work/wrap/zstd"
cat >"$work/cfg.json" <<CFG
{"name":"bench","serviceName":[],"dataPaths":["$corpus"],"user":"root","group":"root",
"backup":{"paths":["$work/dest"],"format":"tar.zst","threads":2,"stateDirectory":"$work/state"}}
CFG
PATH=$work/wrap:$PATH
export PATH
# split LABEL: prints the run's total and its split from $work/tt and $ZSTD_TIMES.
split() {
	awk -v label="$1" -v tt="$(cat "$work/tt")" '
		BEGIN {split(tt, t, " ")}
		/ -d | -t / {chk += $1 + $2; next} {cmp += $1 + $2}
		END {printf "%s total %.2f (user %.2f sys %.2f, wall %.2f) compressor %.2f checker %.2f rest %.2f\n",
			label, t[1] + t[2], t[1], t[2], t[3], cmp, chk, t[1] + t[2] - cmp - chk}' "$ZSTD_TIMES"
}
for rep in $(seq 1 "$reps"); do
	for bin in "$a" "$b"; do
		rm -rf "$work/dest" "$work/state"
		sync
		ZSTD_TIMES=$work/zt
		export ZSTD_TIMES
		rm -f "$ZSTD_TIMES"
		/usr/bin/time -o "$work/tt" -f "%U %S %e" "$bin" run --config "$work/cfg.json" >/dev/null 2>&1 || echo "$bin: run failed"
		split "$bin rep$rep"
	done
done
for rep in $(seq 1 "$reps"); do
	rm -f "$work/native.tar.zst"
	sync
	rm -f "$ZSTD_TIMES"
	/usr/bin/time -o "$work/tt" -f "%U %S %e" tar -I 'zstd -T2' -cf "$work/native.tar.zst" -C "$(dirname "$corpus")" "$(basename "$corpus")"
	split "native rep$rep (rest: tar)"
done
rm -rf "$work/native.tar.zst" "$work/dest"
