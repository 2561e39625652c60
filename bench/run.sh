#!/usr/bin/env bash
# run.sh: the wsgate benchmark. Runs each scenario (3 times by default, each
# time against a fresh sidecar with a fresh database in a temporary
# directory), takes medians, and writes bench/RESULTS.md.
#
#   bench/run.sh            full run (4-5 minutes), writes bench/RESULTS.md
#                           (then bench/compare.sh appends wsgate vs nchan)
#   bench/run.sh --quick    every scenario once, small sizes (about 30 s);
#                           printed and kept in /tmp/wsbench-RESULTS-quick.md
#   bench/run.sh --smoke    ~3 s of wsbench against one sidecar (20 users);
#                           exit status 0 only if every delivery was right
#   bench/run.sh --cluster  cluster mode: one nats-server, 1 or 3 sidecars
#                           (bench/cluster.sh; about 1-2 min), printed and
#                           kept in /tmp/wsbench-RESULTS-cluster.md
#   options: --reps N, --out FILE, --only "1 3 ..." (scenario numbers),
#            --perf DIR (perf record -g on the sidecar during the first run
#            of each scenario; DIR/perf-ID.txt gets the top of the report)
#
# Environment: BUILD_DIR (default build/), WSGATE_BIN, WSBENCH_BIN.
# Scenarios (1)-(7): see "the scenarios" below. Everything is bounded: each
# wsbench run by its --duration/--max-time and by timeout(1), the whole run
# by its sizes (27 runs of at most ~20 s).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

MODE=full
REPS=
OUT=
ONLY=
PERF_DIR=
while [[ $# -gt 0 ]]; do
	case $1 in
	--quick) MODE=quick ;;
	--smoke) MODE=smoke ;;
	--cluster) MODE=cluster ;;
	--reps) REPS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--perf) PERF_DIR=$2; shift ;;
	-h | --help) sed -n '2,19p' "$0"; exit 0 ;;
	*) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

ensure_built || exit 2
WORK=$(mktemp -d /tmp/wsbench-run.XXXXXX)
trap 'stop_sidecar; cluster_cleanup; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# --- smoke: the check that keeps the tool from rotting ---
if [[ $MODE == smoke ]]; then
	rc=0
	start_sidecar hs256 || exit 2
	# single events from 2 threads, then batches: both libwsgate paths.
	timeout 30 "$WSBENCH_BIN" --port "$SC_PORT" --control "$SC_CONTROL" \
		--secret-file "$SC_SECRET" --pidfile "$SC_DIR/pid" --label smoke-single \
		--users 20 --threads 2 --batch 1 --duration 1.5 --max-time 10 \
		--drain-timeout 3 || rc=1
	timeout 30 "$WSBENCH_BIN" --port "$SC_PORT" --control "$SC_CONTROL" \
		--secret-file "$SC_SECRET" --pidfile "$SC_DIR/pid" --label smoke-batch \
		--users 20 --conns 2 --threads 2 --batch 10 --duration 1.5 \
		--max-time 10 --drain-timeout 3 || rc=1
	if [[ $rc != 0 ]]; then
		echo "--- sidecar log tail" >&2
		tail -20 "$SC_DIR/sidecar.log" >&2
	fi
	stop_sidecar
	# Cluster mode too, when this sidecar has it (bench/cluster.sh).
	if sidecar_has_flag --cluster; then
		cluster_smoke || rc=1
	fi
	[[ $rc == 0 ]] && echo "wsbench smoke: OK" || echo "wsbench smoke: FAILED"
	exit $rc
fi

if [[ $MODE == cluster ]]; then
	cluster_main
	exit $?
fi

# --- sizes ---
if [[ $MODE == quick ]]; then
	REPS=${REPS:-1}
	USERS=200 TPUT_S=2 LAT_S=2 IDLE_CONNS=1000 HOLD_S=1 STORM_CONNS=500
	FAN_S=2
	OUT=${OUT:-/tmp/wsbench-RESULTS-quick.md}
else
	REPS=${REPS:-3}
	USERS=1000 TPUT_S=8 LAT_S=10 IDLE_CONNS=10000 HOLD_S=5 STORM_CONNS=4000
	FAN_S=8
	OUT=${OUT:-$BENCH_DIR/RESULTS.md}
fi
LAT_RATE=5000
# 5,000 single SendEvents/s is above what one sidecar commits one event per
# request on 2 cores (see scenario 2), so the paced latency run sends small
# batches: 4 threads x 10 events, 500 requests/s.
LAT_THREADS=4 LAT_BATCH=10
# Connect rate for the event scenarios: paced so handshakes are measured.
CONNECT_RATE=2000

HAS_AUDIT_FLAG=0
sidecar_has_flag --audit && HAS_AUDIT_FLAG=1
# Scenarios 4 and 5 connect thousands of clients from 127.0.0.1 as fast as
# they can: the per-peer handshake rate limit (default 1000/s) is off there.
RATE_OFF=
sidecar_has_flag --handshake-rate-per-peer && RATE_OFF="--handshake-rate-per-peer 0"

FAILED=0
declare -A CMD_OF SC_CMD_OF

# run_scenario ID KEYKIND "SIDECAR FLAGS" WSBENCH FLAGS...
# Runs REPS times, each on a fresh sidecar; JSON lines go to $WORK/ID.jsonl.
run_scenario() {
	local id=$1 kind=$2 scflags=$3 rep rc
	shift 3
	if [[ -n $ONLY && " $ONLY " != *" ${id%%[a-z]*} "* ]]; then
		return 0
	fi
	for rep in $(seq 1 "$REPS"); do
		# shellcheck disable=SC2086
		start_sidecar "$kind" $scflags || { FAILED=$((FAILED + 1)); continue; }
		local auth=(--secret-file "$SC_SECRET")
		[[ $kind == rs256 ]] && auth=(--rs256-key "$SC_DIR/rsa.pem")
		local cmd=("$WSBENCH_BIN" --port "$SC_PORT" --control "$SC_CONTROL"
			"${auth[@]}" --pidfile "$SC_DIR/pid" --label "$id" "$@")
		[[ $rep == 1 ]] && CMD_OF[$id]="${cmd[*]}" SC_CMD_OF[$id]=$SC_CMD
		log "scenario $id, run $rep/$REPS"
		local perf_pid=
		if [[ -n $PERF_DIR && $rep == 1 ]]; then
			mkdir -p "$PERF_DIR"
			perf record -q -g -p "$SC_PID" -o "$WORK/perf.data" \
				>/dev/null 2>&1 &
			perf_pid=$!
		fi
		timeout 300 "${cmd[@]}" >"$WORK/$id.$rep.txt" 2>&1
		rc=$?
		if [[ -n $perf_pid ]]; then
			kill -INT "$perf_pid" 2>/dev/null
			wait "$perf_pid" 2>/dev/null
			{
				echo "# perf record -g -p SIDECAR during scenario $id"
				perf report -i "$WORK/perf.data" --stdio --no-children \
					--sort comm,dso,sym -g none --percent-limit 0.5 2>/dev/null |
					grep -v '^#' | grep -v '^$' | head -60
				echo
				echo "# call graphs (caller view, top)"
				perf report -i "$WORK/perf.data" --stdio --children \
					--percent-limit 3 2>/dev/null | grep -v '^$' | head -150
			} >"$PERF_DIR/perf-$id.txt"
			rm -f "$WORK/perf.data"
		fi
		grep '^{' "$WORK/$id.$rep.txt" >>"$WORK/$id.jsonl"
		grep -v '^{' "$WORK/$id.$rep.txt" >&2
		if [[ $rc != 0 ]]; then
			FAILED=$((FAILED + 1))
			log "scenario $id run $rep FAILED (exit $rc); sidecar log tail:"
			tail -5 "$SC_DIR/sidecar.log" >&2
		fi
		stop_sidecar
	done
}

# --- the scenarios ---
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# (1) throughput, SendBatch of 100, 1000 users x 1 connection.
run_scenario 1 hs256 "" --users "$USERS" --conns 1 --connect-rate "$CONNECT_RATE" \
	--threads 4 --batch 100 --duration "$TPUT_S"
# (2) throughput, 8 backend threads of single SendEvent.
run_scenario 2 hs256 "" --users "$USERS" --conns 1 --connect-rate "$CONNECT_RATE" \
	--threads 8 --batch 1 --duration "$TPUT_S"
# (3) latency at a steady 5,000 events/s.
run_scenario 3 hs256 "" --users "$USERS" --conns 1 --connect-rate "$CONNECT_RATE" \
	--threads "$LAT_THREADS" --batch "$LAT_BATCH" --rate "$LAT_RATE" \
	--duration "$LAT_S"
# (4) idle connections: sidecar KB per connection.
run_scenario 4 hs256 "$RATE_OFF" --users "$IDLE_CONNS" --conns 1 --connect-rate 5000 \
	--idle --hold "$HOLD_S"
# (5) handshake storm: unpaced connects (256 in flight), HS256 then RS256.
run_scenario 5a hs256 "$RATE_OFF" --users "$STORM_CONNS" --conns 1 --connect-rate 0 \
	--max-inflight 256 --idle --hold 0
run_scenario 5b rs256 "$RATE_OFF" --users "$STORM_CONNS" --conns 1 --connect-rate 0 \
	--max-inflight 256 --idle --hold 0
# (6) one user, 100 connections (multi-tab fan-out): frames/s. A window
# keeps the publishers from outrunning delivery (which would end in 4008).
run_scenario 6 hs256 "--max-conns-per-user 128" --users 1 --conns 100 \
	--threads 2 --batch 10 --duration "$FAN_S" --window 20000
# (7) the audit trail's cost: (1) and (3) with --audit off.
if [[ $HAS_AUDIT_FLAG == 1 ]]; then
	run_scenario 7a hs256 "--audit off" --users "$USERS" --conns 1 \
		--connect-rate "$CONNECT_RATE" --threads 4 --batch 100 --duration "$TPUT_S"
	run_scenario 7b hs256 "--audit off" --users "$USERS" --conns 1 \
		--connect-rate "$CONNECT_RATE" --threads "$LAT_THREADS" \
		--batch "$LAT_BATCH" --rate "$LAT_RATE" --duration "$LAT_S"
else
	log "the sidecar has no --audit flag: scenario 7 skipped"
fi
T_END=$(date +%s)

# --- the report ---
J() { echo "$WORK/$1.jsonl"; }
M() { fmt "$(median "$(J "$1")" "$2")" "${3:-0}"; }
have() { [[ -s $(J "$1") ]]; }
checks() {
	local f
	f=$(J "$1")
	printf '%s ok; foreign %s, missing %s, out of order %s' "$(runs_ok "$f")" \
		"$(range "$f" foreign)" "$(range "$f" missing)" "$(range "$f" out_of_order)"
}
# "sustained", or how far the paced publishers fell behind.
pace() {
	local eps lag
	eps=$(median "$(J "$1")" publish_eps)
	lag=$(median "$(J "$1")" max_lag_ms)
	if awk -v e="$eps" -v r="$LAT_RATE" -v l="$lag" \
		'BEGIN { exit !(e >= 0.97 * r) }'; then
		echo "rate sustained (publishers at most $(fmt "$lag") ms behind schedule)"
	else
		echo "**rate NOT sustained**: $(fmt "$eps") events/s, publisher max lag $(fmt "$lag") ms"
	fi
}
lat_row() {
	printf '%s / %s / %s / %s / %s ms' "$(M "$1" lat_p50_ms 2)" \
		"$(M "$1" lat_p90_ms 2)" "$(M "$1" lat_p99_ms 2)" \
		"$(M "$1" lat_p999_ms 2)" "$(M "$1" lat_max_ms 2)"
}

{
	echo "# wsgate benchmark results"
	echo
	echo "Written by \`bench/run.sh$([[ $MODE == quick ]] && echo " --quick")\`"
	echo "($REPS run(s) per scenario, each on a fresh sidecar and database;"
	echo "the numbers are medians, ranges are min-max over the runs). The"
	echo "sidecar, the load generator (wsbench) and its backend threads share"
	echo "the same machine, so every number includes the cost of the client."
	echo
	machine_md
	echo "- load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- whole run: $((T_END - T_START)) s"
	echo
	echo "| # | scenario | setup | result (median) | range | checks |"
	echo "| --- | --- | --- | --- | --- | --- |"
	if have 1; then
		echo "| 1 | throughput, SendBatch of 100 | $USERS users x 1 conn, 4 threads x batch 100, ${TPUT_S} s unpaced | **$(M 1 delivered_eps) events/s** delivered | $(range "$(J 1)" delivered_eps) | $(checks 1) |"
	fi
	if have 2; then
		echo "| 2 | throughput, single SendEvent | $USERS users x 1 conn, 8 threads x 1 event, ${TPUT_S} s unpaced | **$(M 2 delivered_eps) events/s** delivered | $(range "$(J 2)" delivered_eps) | $(checks 2) |"
	fi
	if have 3; then
		echo "| 3 | latency at $LAT_RATE events/s | $USERS users x 1 conn, $LAT_THREADS threads x batch $LAT_BATCH, paced, ${LAT_S} s | p50/p90/p99/p99.9/max **$(lat_row 3)**; $(pace 3) | p99 $(range "$(J 3)" lat_p99_ms 2) | $(checks 3) |"
	fi
	if have 4; then
		echo "| 4 | idle connections | $IDLE_CONNS users x 1 conn, held ${HOLD_S} s | **$(M 4 kb_per_conn 2) KB per connection** (sidecar RSS $(M 4 sidecar_rss_before_kb) -> $(M 4 sidecar_rss_end_kb) KB) | $(range "$(J 4)" kb_per_conn 2) | $(runs_ok "$(J 4)") ok, $(range "$(J 4)" conns_failed) failed |"
	fi
	if have 5a; then
		echo "| 5 | handshake storm, HS256 | $STORM_CONNS connections, unpaced, 256 in flight | **$(M 5a handshakes_per_s) connections/s** (p50 $(M 5a hs_p50_ms 2) ms, p99 $(M 5a hs_p99_ms 2) ms; sidecar $(M 5a hs_sidecar_cpu_us) us CPU per handshake, $(M 5a hs_sidecar_cpu_pct)% CPU; wsbench $(M 5a hs_bench_cpu_pct)% CPU) | $(range "$(J 5a)" handshakes_per_s) | $(runs_ok "$(J 5a)") ok |"
	fi
	if have 5b; then
		echo "| 5 | handshake storm, RS256 | $STORM_CONNS connections, unpaced, 256 in flight | **$(M 5b handshakes_per_s) connections/s** (p50 $(M 5b hs_p50_ms 2) ms, p99 $(M 5b hs_p99_ms 2) ms; sidecar $(M 5b hs_sidecar_cpu_us) us CPU per handshake, $(M 5b hs_sidecar_cpu_pct)% CPU; wsbench $(M 5b hs_bench_cpu_pct)% CPU) | $(range "$(J 5b)" handshakes_per_s) | $(runs_ok "$(J 5b)") ok |"
	fi
	if have 6; then
		echo "| 6 | fan-out, 1 user x 100 conns | 2 threads x batch 10, window 20,000 frames, ${FAN_S} s | **$(M 6 delivered_fps) frames/s** ($(M 6 delivered_eps) events/s) | $(range "$(J 6)" delivered_fps) | $(checks 6) |"
	fi
	if have 7a; then
		echo "| 7 | (1) with \`--audit off\` | as (1) | **$(M 7a delivered_eps) events/s** (audit on: $(M 1 delivered_eps)) | $(range "$(J 7a)" delivered_eps) | $(checks 7a) |"
	fi
	if have 7b; then
		echo "| 7 | (3) with \`--audit off\` | as (3) | **$(lat_row 7b)** (audit on: $(lat_row 3)); $(pace 7b) | p99 $(range "$(J 7b)" lat_p99_ms 2) | $(checks 7b) |"
	fi
	if [[ $HAS_AUDIT_FLAG == 0 ]]; then
		echo "| 7 | audit off | - | not run: this sidecar has no \`--audit\` flag | - | - |"
	fi
	echo
	echo "## Details (medians)"
	echo
	echo "| # | published/s | delivered frames/s | request p50 / p99 ms | latency p50 / p99 ms | sidecar CPU % | sidecar CPU us/frame | sidecar RSS end KB | wsbench CPU % | handshakes/s |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	for id in 1 2 3 4 5a 5b 6 7a 7b; do
		have "$id" || continue
		echo "| $id | $(M "$id" publish_eps) | $(M "$id" delivered_fps) | $(M "$id" rtt_p50_ms 2) / $(M "$id" rtt_p99_ms 2) | $(M "$id" lat_p50_ms 2) / $(M "$id" lat_p99_ms 2) | $(M "$id" sidecar_cpu_pct) | $(M "$id" sidecar_cpu_us_per_frame 1) | $(M "$id" sidecar_rss_end_kb) | $(M "$id" bench_cpu_pct) | $(M "$id" handshakes_per_s) |"
	done
	echo
	echo "## Commands"
	echo
	echo "Each run starts its own sidecar in a fresh temporary directory"
	echo "(\`ulimit -n\` raised to the hard limit); these are the first run's"
	echo "exact command lines."
	echo
	echo '```sh'
	for id in 1 2 3 4 5a 5b 6 7a 7b; do
		[[ -n ${CMD_OF[$id]:-} ]] || continue
		echo "# scenario $id"
		echo "${SC_CMD_OF[$id]} &"
		echo "${CMD_OF[$id]}"
	done
	echo '```'
	echo
	echo "## Raw JSON lines"
	echo
	echo '```json'
	for id in 1 2 3 4 5a 5b 6 7a 7b; do
		[[ -s $(J "$id") ]] && cat "$(J "$id")"
	done
	echo '```'
} >"$OUT"

log "results written to $OUT"
if [[ $MODE == quick ]]; then
	sed -n '1,/^## Commands/p' "$OUT"
fi
if [[ $FAILED -gt 0 ]]; then
	log "$FAILED run(s) failed"
	exit 1
fi
exit 0
