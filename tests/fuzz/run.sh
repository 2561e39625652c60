#!/usr/bin/env bash
# run.sh SECONDS [BUILD_DIR]: configures a clang build with -DWSGATE_FUZZ=ON
# (default BUILD_DIR: build-fuzz at the top of the repository), builds the
# harnesses and runs each for SECONDS, one after the other. Each first
# replays its saved crashes (regressions/<harness>-*), then fuzzes a copy of
# its seed corpus kept in BUILD_DIR/fuzz-corpus/ (the repository's corpus is
# never written to; the copy grows from run to run). Crash inputs go to
# BUILD_DIR/artifacts/, full logs to BUILD_DIR/fuzz-logs/. Prints one line
# per harness; exits 1 if any harness crashed, 2 on a usage/build error.
#
# Environment: FUZZ_CC (default clang), JOBS (build parallelism, default 2),
# FUZZ_HARNESSES (default: all, e.g. "jwt handshake").
set -u

usage() {
	echo "usage: $0 SECONDS [BUILD_DIR]" >&2
	exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
secs=$1
case $secs in '' | *[!0-9]*) usage ;; esac
[ "$secs" -gt 0 ] || usage

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${2:-$root/build-fuzz}
mkdir -p "$build" && build=$(cd "$build" && pwd) || exit 2
harnesses=${FUZZ_HARNESSES:-request jwt client_frame handshake payload_json}

CC=${FUZZ_CC:-clang} cmake -S "$root" -B "$build" -DWSGATE_FUZZ=ON \
	-DWSGATE_SANITIZE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null ||
	exit 2
cmake --build "$build" --target fuzz_harnesses -j "${JOBS:-2}" >/dev/null ||
	{
		echo "run.sh: build failed (cmake --build $build" \
			"--target fuzz_harnesses)" >&2
		exit 2
	}

artifacts=$build/artifacts
logs=$build/fuzz-logs
mkdir -p "$artifacts" "$logs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# A token can be up to AUTH_JWT_MAX_TOKEN (8192) bytes: let inputs cross it.
max_len_for() {
	case $1 in
	jwt) echo 9000 ;;
	*) echo 4096 ;;
	esac
}

failed=0
for h in $harnesses; do
	exe=$build/tests/fuzz/fuzz_$h
	corpus=$build/fuzz-corpus/$h
	log=$logs/$h.log
	mkdir -p "$corpus"
	cp "$here/corpus/$h/"* "$corpus/"
	: >"$log"
	result=ok

	# Known crash inputs first: each must now pass.
	regs=()
	for f in "$here/regressions/$h-"*; do
		[ -f "$f" ] && regs+=("$f")
	done
	if [ ${#regs[@]} -gt 0 ] &&
		! "$exe" "${regs[@]}" >>"$log" 2>&1; then
		result="REGRESSION (see $log)"
	fi

	start=$(date +%s)
	if [ "$result" = ok ]; then
		"$exe" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
			-max_len="$(max_len_for "$h")" -print_final_stats=1 \
			-artifact_prefix="$artifacts/$h-" "$corpus" >>"$log" 2>&1
		rc=$?
		if [ $rc -ne 0 ]; then
			art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' \
				"$log" | tail -n 1)
			result="CRASH exit=$rc ${art:+input=$art} (see $log)"
		fi
	fi
	elapsed=$(($(date +%s) - start))

	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
		tail -n 1)
	if [ -z "$runs" ]; then
		runs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
	fi
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	files=$(find "$corpus" -type f | wc -l)
	printf '%-18s runs=%-10s seconds=%-5s exec/s=%-8s corpus=%-6s %s\n' \
		"fuzz_$h" "${runs:-0}" "$elapsed" "${rate:--}" "$files" "$result"
	if [ "$result" != ok ]; then
		failed=1
		grep -E -A 30 '^==[0-9]+==ERROR|runtime error|Assertion|deadly signal' \
			"$log" | head -n 40 >&2
	fi
done
exit $failed
