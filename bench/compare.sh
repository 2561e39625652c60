#!/usr/bin/env bash
# compare.sh: wsgate against nchan (nginx's pub/sub module, memory store) on
# the same machine, in the same run, with the same load generator and the
# same workloads as bench/run.sh scenarios 1-3:
#   1. throughput, batches of 100 (nchan: 100 pipelined POSTs) from 4 threads
#   2. throughput, single events from 8 threads (nchan: one POST at a time)
#   3. latency at a steady 5,000 events/s (4 threads x 10 per request)
# Subscribers: 1000 users x 1 WebSocket (wsgate: /ws with a JWT; nchan:
# /sub/<user>). nchan messages carry no seq: only counts, foreign messages
# and latency are checked there.
#
# Installs nginx and libnginx-mod-nchan (Debian) with apt-get when they are
# missing and we are root. Each workload runs 3 times per server (servers
# alternate, each run on a fresh server), medians are compared; the table
# is printed and written into bench/RESULTS.md (replacing an earlier
# comparison section). About 4 minutes; --quick: once each, small sizes,
# printed only. Options: --reps N, --out FILE.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODE=full
REPS=
OUT=
while [[ $# -gt 0 ]]; do
	case $1 in
	--quick) MODE=quick ;;
	--reps) REPS=$2; shift ;;
	--out) OUT=$2; shift ;;
	-h | --help) sed -n '2,18p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

if [[ $MODE == quick ]]; then
	REPS=${REPS:-1} USERS=200 TPUT_S=2 LAT_S=2
else
	REPS=${REPS:-3} USERS=1000 TPUT_S=8 LAT_S=10
	OUT=${OUT:-$BENCH_DIR/RESULTS.md}
fi
LAT_RATE=5000 CONNECT_RATE=2000
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

# --- nginx + nchan ---
ensure_nchan() {
	if command -v nginx >/dev/null && [[ -f $NCHAN_MODULE ]]; then
		return 0
	fi
	if [[ $(id -u) != 0 ]]; then
		log "missing nginx / libnginx-mod-nchan (as root: apt-get install nginx libnginx-mod-nchan)"
		return 1
	fi
	log "installing nginx and libnginx-mod-nchan"
	apt-get update -q >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx \
			libnginx-mod-nchan >/dev/null || return 1
	# The package may have started the system nginx; we run our own.
	command -v nginx >/dev/null && [[ -f $NCHAN_MODULE ]]
}

# Sets NC_DIR, NC_PORT, NC_PID (master), NC_WORKER, NC_CMD.
start_nchan() {
	NC_DIR=$(mktemp -d /tmp/wsbench-nchan.XXXXXX) || return 1
	mkdir -p "$NC_DIR/tmp"
	local try
	# A free port can be taken by someone else before nginx binds it:
	# then try another, as start_sidecar does.
	for try in 1 2 3 4 5; do
		NC_PORT=$(free_port) || return 1
		start_nchan_on_port && return 0
		{ kill -KILL "$NC_PID" && wait "$NC_PID"; } 2>/dev/null
		grep -q "in use" "$NC_DIR/error.log" "$NC_DIR/out.log" \
			2>/dev/null || break
		log "port $NC_PORT was taken; trying another"
	done
	log "nginx did not start: $NC_CMD"
	cat "$NC_DIR/error.log" "$NC_DIR/out.log" >&2 2>/dev/null
	return 1
}

# One attempt of start_nchan on NC_PORT.
start_nchan_on_port() {
	: >"$NC_DIR/error.log"
	cat >"$NC_DIR/nginx.conf" <<EOF
# One worker: on 2 cores, 2 workers measured no faster (nchan then routes
# messages between workers), and one pid keeps the CPU/RSS numbers exact.
load_module $NCHAN_MODULE;
worker_processes 1;
daemon off;
pid $NC_DIR/nginx.pid;
error_log $NC_DIR/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $NC_DIR/tmp/body;
  proxy_temp_path $NC_DIR/tmp/proxy;
  fastcgi_temp_path $NC_DIR/tmp/fastcgi;
  uwsgi_temp_path $NC_DIR/tmp/uwsgi;
  scgi_temp_path $NC_DIR/tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  nchan_max_reserved_memory 256M;
  server {
    listen 127.0.0.1:$NC_PORT;
    location ~ ^/pub/([^/]+)\$ {
      nchan_publisher;
      nchan_channel_id \$1;
      nchan_message_buffer_length 10;
      nchan_message_timeout 60s;
    }
    location ~ ^/sub/([^/]+)\$ {
      nchan_subscriber websocket;
      nchan_channel_id \$1;
    }
  }
}
EOF
	NC_CMD="nginx -c $NC_DIR/nginx.conf -p $NC_DIR"
	nginx -t -c "$NC_DIR/nginx.conf" -p "$NC_DIR" >"$NC_DIR/test.log" 2>&1 ||
		{ log "nginx -t failed:"; cat "$NC_DIR/test.log" >&2; return 1; }
	nginx -c "$NC_DIR/nginx.conf" -p "$NC_DIR" >"$NC_DIR/out.log" 2>&1 &
	NC_PID=$!
	local i
	for i in $(seq 1 100); do
		if { (exec 3<>"/dev/tcp/127.0.0.1/$NC_PORT"); } 2>/dev/null; then
			NC_WORKER=$(pgrep -P "$NC_PID" | head -1)
			[[ -n $NC_WORKER ]] && return 0
		fi
		kill -0 "$NC_PID" 2>/dev/null || break
		sleep 0.1
	done
	return 1
}

stop_nchan() {
	if [[ -n ${NC_PID:-} ]] && kill -0 "$NC_PID" 2>/dev/null; then
		kill -QUIT "$NC_PID" 2>/dev/null
		local i
		for i in $(seq 1 50); do
			kill -0 "$NC_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$NC_PID" 2>/dev/null || true
		[[ -n ${NC_WORKER:-} ]] && kill -KILL "$NC_WORKER" 2>/dev/null
	fi
	[[ -n ${NC_PID:-} ]] && wait "$NC_PID" 2>/dev/null
	NC_PID=
	[[ -n ${NC_DIR:-} ]] && rm -rf "$NC_DIR"
	NC_DIR=
}

ensure_built || exit 2
ensure_nchan || exit 2
WORK=$(mktemp -d /tmp/wsbench-compare.XXXXXX)
trap 'stop_sidecar; stop_nchan; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

FAILED=0
declare -A CMD_OF

# workload flags, by number
workload() {
	case $1 in
	1) echo "--users $USERS --conns 1 --connect-rate $CONNECT_RATE --threads 4 --batch 100 --duration $TPUT_S" ;;
	2) echo "--users $USERS --conns 1 --connect-rate $CONNECT_RATE --threads 8 --batch 1 --duration $TPUT_S" ;;
	3) echo "--users $USERS --conns 1 --connect-rate $CONNECT_RATE --threads 4 --batch 10 --rate $LAT_RATE --duration $LAT_S" ;;
	esac
}

# one SERVER WORKLOAD REP
one() {
	local server=$1 w=$2 rep=$3 rc cmd
	# shellcheck disable=SC2207
	local flags=($(workload "$w"))
	if [[ $server == wsgate ]]; then
		start_sidecar hs256 || { FAILED=$((FAILED + 1)); return; }
		cmd=("$WSBENCH_BIN" --port "$SC_PORT" --control "$SC_CONTROL"
			--secret-file "$SC_SECRET" --pidfile "$SC_DIR/pid"
			--label "wsgate-$w" "${flags[@]}")
		[[ $rep == 1 ]] && CMD_OF[wsgate-$w]="$SC_CMD & ${cmd[*]}"
	else
		start_nchan || { FAILED=$((FAILED + 1)); return; }
		cmd=("$WSBENCH_BIN" --nchan --port "$NC_PORT" --sidecar-pid "$NC_WORKER"
			--label "nchan-$w" "${flags[@]}")
		[[ $rep == 1 ]] && CMD_OF[nchan-$w]="$NC_CMD & ${cmd[*]}"
	fi
	log "$server, workload $w, run $rep/$REPS"
	timeout 300 "${cmd[@]}" >"$WORK/run.txt" 2>&1
	rc=$?
	grep '^{' "$WORK/run.txt" >>"$WORK/$server-$w.jsonl"
	grep -v '^{' "$WORK/run.txt" >&2
	if [[ $rc != 0 ]]; then
		FAILED=$((FAILED + 1))
		log "$server workload $w run $rep FAILED (exit $rc)"
	fi
	if [[ $server == wsgate ]]; then stop_sidecar; else stop_nchan; fi
}

T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for w in 1 2 3; do
	for rep in $(seq 1 "$REPS"); do
		one wsgate "$w" "$rep"
		one nchan "$w" "$rep"
	done
done
T_END=$(date +%s)

# --- the table ---
J() { echo "$WORK/$1.jsonl"; }
M() { fmt "$(median "$(J "$1")" "$2")" "${3:-0}"; }
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else print "-" }'
}
row() { # label key decimals: wsgate | nchan | ratio
	local w=$1 key=$2 d=${3:-0} a b
	a=$(median "$(J wsgate-"$w")" "$key")
	b=$(median "$(J nchan-"$w")" "$key")
	echo "$(fmt "$a" "$d") | $(fmt "$b" "$d") | $(ratio "$a" "$b")"
}
section() {
	echo "## wsgate vs nchan"
	echo
	echo "Written by \`bench/compare.sh$([[ $MODE == quick ]] && echo " --quick")\`"
	echo "($REPS run(s) per server and workload, alternating, each on a fresh"
	echo "server; medians; $((T_END - T_START)) s; load average $LOAD_START at"
	echo "the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end). nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"
	echo "on nginx $(nginx -v 2>&1 | sed 's|.*nginx/||'), one worker, memory store."
	echo "Not the same job: wsgate verifies a JWT per connection, commits"
	echo "every event (and, with the audit trail on, a write-ahead row per"
	echo "delivery) to SQLite before it answers OK, and numbers events per"
	echo "user; nchan keeps messages in memory and answers at once."
	echo
	echo "| workload | metric | wsgate | nchan | wsgate / nchan |"
	echo "| --- | --- | --- | --- | --- |"
	echo "| 1. batches of 100, 4 threads | delivered events/s | $(row 1 delivered_eps) |"
	echo "| 1. | server CPU us per event | $(row 1 sidecar_cpu_us_per_frame 1) |"
	echo "| 2. single events, 8 threads | delivered events/s | $(row 2 delivered_eps) |"
	echo "| 2. | server CPU us per event | $(row 2 sidecar_cpu_us_per_frame 1) |"
	echo "| 2. | latency p50 ms (at saturation) | $(row 2 lat_p50_ms 2) |"
	echo "| 3. steady $LAT_RATE events/s | latency p50 ms | $(row 3 lat_p50_ms 2) |"
	echo "| 3. | latency p99 ms | $(row 3 lat_p99_ms 2) |"
	echo "| 3. | latency p99.9 ms | $(row 3 lat_p999_ms 2) |"
	echo "| 3. | latency max ms | $(row 3 lat_max_ms 2) |"
	echo "| 3. | server CPU % | $(row 3 sidecar_cpu_pct) |"
	echo "| all | runs with every delivery right | $(runs_ok "$(J wsgate-1)"), $(runs_ok "$(J wsgate-2)"), $(runs_ok "$(J wsgate-3)") | $(runs_ok "$(J nchan-1)"), $(runs_ok "$(J nchan-2)"), $(runs_ok "$(J nchan-3)") | |"
	echo
	echo "Commands (first run of each):"
	echo
	echo '```sh'
	local k
	for k in wsgate-1 nchan-1 wsgate-2 nchan-2 wsgate-3 nchan-3; do
		[[ -n ${CMD_OF[$k]:-} ]] && echo "${CMD_OF[$k]}"
	done
	echo '```'
	echo
	echo "Raw JSON lines:"
	echo
	echo '```json'
	for k in wsgate-1 nchan-1 wsgate-2 nchan-2 wsgate-3 nchan-3; do
		[[ -s $(J "$k") ]] && cat "$(J "$k")"
	done
	echo '```'
}
section >"$WORK/section.md"
sed -n '1,/^Commands/p' "$WORK/section.md" | sed '$d'

if [[ -n $OUT ]]; then
	# Replace an earlier comparison in OUT, keep everything else.
	if [[ -f $OUT ]]; then
		awk '/^## wsgate vs nchan/ { skip = 1; next }
		     /^## / { skip = 0 }
		     !skip' "$OUT" >"$WORK/out.md"
		# No trailing blank lines before appending.
		sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$WORK/out.md" >"$OUT"
		echo >>"$OUT"
	fi
	cat "$WORK/section.md" >>"$OUT"
	log "comparison written to $OUT"
fi
if [[ $FAILED -gt 0 ]]; then
	log "$FAILED run(s) failed"
	exit 1
fi
exit 0
