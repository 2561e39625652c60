# shellcheck shell=bash
# cluster.sh: the cluster-mode scenarios of the benchmark (docs/CLUSTER.md,
# "Benchmark plan"), sourced by `bench/run.sh --cluster` after its option
# parsing (REPS, OUT, ONLY, WORK and lib.sh are set). Each run starts one
# nats-server with JetStream (random port, fresh store) and 1 or 3
# sidecars with --cluster on loopback, runs wsbench (3 s per scenario),
# stops everything. The single-pod baseline (C0) is the same flags without
# --cluster. Results: medians over REPS runs, printed and written to OUT
# (default /tmp/wsbench-RESULTS-cluster.md, not bench/RESULTS.md).
#
#   C0  single pod (no NATS): SendEvent in sequence, 1 thread
#   C1  1 pod + NATS: SendEvent in sequence, 1 thread: events/s, reply p50/p99
#   C2  1 pod + NATS: SendBatch of 100 to 100 users, 1 thread
#   C3  3 pods: SendEvent in sequence through a (b and c replicate)
#   C4  3 pods: SendBatch of 100 to 100 users through a
#   C5  3 pods: end to end, accepted by a, frame written by b, paced
#       1000 events/s: latency p50/p99
#
# Smoke (from run.sh --smoke, when the sidecar has --cluster): one pod,
# 1.5 s of C5's shape, deliveries checked.

CL_REPS=${REPS:-3}
CL_OUT=${OUT:-/tmp/wsbench-RESULTS-cluster.md}
CL_USERS=100 CL_S=3 CL_RATE=1000
NATS_PID='' NATS_DIR='' NATS_URL=''
declare -a POD_PID=() POD_DIR=() POD_PORT=() POD_CONTROL=() POD_SECRET=()

# start_nats: nats-server -js on 127.0.0.1, a random port (never 4222),
# store in a fresh directory; sets NATS_PID, NATS_DIR, NATS_URL.
start_nats() {
	local i port
	command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] ||
		{ log "nats-server is not installed"; return 1; }
	NATS_DIR=$(mktemp -d /tmp/wsbench-nats.XXXXXX) || return 1
	PATH=$PATH:/usr/sbin nats-server -js -a 127.0.0.1 -p -1 -sd "$NATS_DIR" \
		--ports_file_dir "$NATS_DIR" >"$NATS_DIR/nats.log" 2>&1 &
	NATS_PID=$!
	for i in $(seq 1 100); do
		port=$(grep -o '127.0.0.1:[0-9]*' "$NATS_DIR/nats-server_$NATS_PID.ports" \
			2>/dev/null | cut -d: -f2)
		if [[ -n $port ]]; then
			NATS_URL=nats://127.0.0.1:$port
			return 0
		fi
		kill -0 "$NATS_PID" 2>/dev/null || break
		sleep 0.1
	done
	log "nats-server did not start"; tail -5 "$NATS_DIR/nats.log" >&2
	return 1
}

stop_nats() {
	if [[ -n $NATS_PID ]]; then
		kill -TERM "$NATS_PID" 2>/dev/null
		wait "$NATS_PID" 2>/dev/null
	fi
	NATS_PID=
	[[ -n $NATS_DIR ]] && rm -rf "$NATS_DIR"
	NATS_DIR=
}

# start_pods N: N sidecars (node ids a, b, c) on NATS_URL, each with its
# own directory, secret and database; returns once each accepts an event
# (it is connected to NATS).
start_pods() {
	local n=$1 i node ok t nodes=(a b c)
	for ((i = 0; i < n; i++)); do
		node=${nodes[i]}
		start_sidecar hs256 --cluster "$NATS_URL" --node-id "$node" ||
			return 1
		POD_PID[i]=$SC_PID POD_DIR[i]=$SC_DIR POD_PORT[i]=$SC_PORT
		POD_CONTROL[i]=$SC_CONTROL POD_SECRET[i]=$SC_SECRET
		SC_PID='' SC_DIR=''
	done
	for ((i = 0; i < n; i++)); do
		ok=0
		for t in $(seq 1 100); do
			if "$BUILD_DIR/wsgatectl" --control "${POD_CONTROL[i]}" send \
				--user probe --type probe --event-id "probe-$i-$t" \
				>/dev/null 2>&1; then
				ok=1
				break
			fi
			sleep 0.1
		done
		[[ $ok == 1 ]] || { log "pod $i never accepted an event"; return 1; }
	done
}

stop_pods() {
	local i
	for i in "${!POD_PID[@]}"; do
		SC_PID=${POD_PID[i]} SC_DIR=${POD_DIR[i]}
		stop_sidecar
	done
	POD_PID=() POD_DIR=() POD_PORT=() POD_CONTROL=() POD_SECRET=()
}

# cluster_run ID PODS RECV SEND WSBENCH-FLAGS...: REPS runs on fresh
# processes; PODS 0 is the single-pod baseline (no NATS); tabs connect to
# pod RECV, the backend sends through pod SEND. JSON lines: $WORK/ID.jsonl.
cluster_run() {
	local id=$1 pods=$2 recv=$3 send=$4 rep rc
	shift 4
	if [[ -n $ONLY && " $ONLY " != *" $id "* ]]; then
		return 0
	fi
	for rep in $(seq 1 "$CL_REPS"); do
		if [[ $pods == 0 ]]; then
			start_sidecar hs256 || { CL_FAILED=$((CL_FAILED + 1)); continue; }
			POD_PID[0]=$SC_PID POD_DIR[0]=$SC_DIR POD_PORT[0]=$SC_PORT
			POD_CONTROL[0]=$SC_CONTROL POD_SECRET[0]=$SC_SECRET
			SC_PID='' SC_DIR=''
		elif ! start_nats || ! start_pods "$pods"; then
			CL_FAILED=$((CL_FAILED + 1))
			stop_pods; stop_nats
			continue
		fi
		echo "${POD_PID[send]}" >"$WORK/pid"
		log "cluster scenario $id, run $rep/$CL_REPS"
		timeout 120 "$WSBENCH_BIN" --port "${POD_PORT[recv]}" \
			--control "${POD_CONTROL[send]}" --secret-file "${POD_SECRET[recv]}" \
			--pidfile "$WORK/pid" --label "$id" "$@" >"$WORK/$id.$rep.txt" 2>&1
		rc=$?
		grep '^{' "$WORK/$id.$rep.txt" >>"$WORK/$id.jsonl"
		if [[ $rc != 0 ]]; then
			CL_FAILED=$((CL_FAILED + 1))
			log "cluster scenario $id run $rep FAILED (exit $rc):"
			grep -v '^{' "$WORK/$id.$rep.txt" | tail -5 >&2
			tail -5 "${POD_DIR[send]}/sidecar.log" >&2
		fi
		stop_pods
		stop_nats
	done
}

cluster_cleanup() { stop_pods; stop_nats; }

# --smoke: one pod, deliveries checked. Returns wsbench's status.
cluster_smoke() {
	local rc
	if ! start_nats || ! start_pods 1; then
		cluster_cleanup
		return 1
	fi
	echo "${POD_PID[0]}" >"$WORK/pid"
	timeout 30 "$WSBENCH_BIN" --port "${POD_PORT[0]}" \
		--control "${POD_CONTROL[0]}" --secret-file "${POD_SECRET[0]}" \
		--pidfile "$WORK/pid" --label smoke-cluster --users 20 --threads 2 --batch 1 \
		--duration 1.5 --max-time 10 --drain-timeout 3
	rc=$?
	[[ $rc != 0 ]] && tail -20 "${POD_DIR[0]}/sidecar.log" >&2
	cluster_cleanup
	return $rc
}

cluster_main() {
	local single=(--users "$CL_USERS" --conns 1 --threads 1 --batch 1
		--duration "$CL_S" --max-time 30)
	local batch=(--users "$CL_USERS" --conns 1 --threads 1 --batch 100
		--duration "$CL_S" --max-time 30)
	local e2e=(--users "$CL_USERS" --conns 1 --threads 1 --batch 1
		--rate "$CL_RATE" --duration "$CL_S" --max-time 30)
	CL_FAILED=0
	sidecar_has_flag --cluster ||
		{ log "this sidecar has no --cluster flag"; return 2; }
	local load_start
	load_start=$(cut -d' ' -f1-3 /proc/loadavg)
	cluster_run C0 0 0 0 "${single[@]}"
	cluster_run C1 1 0 0 "${single[@]}"
	cluster_run C2 1 0 0 "${batch[@]}"
	cluster_run C3 3 0 0 "${single[@]}"
	cluster_run C4 3 0 0 "${batch[@]}"
	cluster_run C5 3 1 0 "${e2e[@]}"

	J() { echo "$WORK/$1.jsonl"; }
	M() { fmt "$(median "$(J "$1")" "$2")" "${3:-0}"; }
	{
		echo "# wsgate cluster benchmark (bench/run.sh --cluster)"
		echo
		echo "$CL_REPS run(s) per scenario, each on a fresh nats-server and fresh"
		echo "sidecars; medians, ranges min-max. $CL_USERS users x 1 connection,"
		echo "${CL_S} s per run; wsbench, the sidecars and nats-server share the machine."
		echo
		machine_md
		echo "- nats-server: $(PATH=$PATH:/usr/sbin nats-server --version 2>/dev/null)"
		echo "- load average at the start: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
		echo
		echo "| # | scenario | events/s accepted | reply p50 / p99 ms | send -> frame p50 / p99 ms | checks |"
		echo "| --- | --- | --- | --- | --- | --- |"
		local id desc
		for id in C0 C1 C2 C3 C4 C5; do
			[[ -s $(J "$id") ]] || continue
			case $id in
			C0) desc="single pod, no NATS: SendEvent in sequence" ;;
			C1) desc="1 pod + NATS: SendEvent in sequence" ;;
			C2) desc="1 pod + NATS: SendBatch of 100 to 100 users" ;;
			C3) desc="3 pods: SendEvent in sequence through a" ;;
			C4) desc="3 pods: SendBatch of 100 through a" ;;
			C5) desc="3 pods: accepted by a, frame on b, paced $CL_RATE/s" ;;
			esac
			echo "| $id | $desc | **$(M "$id" publish_eps)** ($(range "$(J "$id")" publish_eps)) | $(M "$id" rtt_p50_ms 2) / $(M "$id" rtt_p99_ms 2) | $(M "$id" lat_p50_ms 2) / $(M "$id" lat_p99_ms 2) | $(runs_ok "$(J "$id")") ok; missing $(range "$(J "$id")" missing), out of order $(range "$(J "$id")" out_of_order) |"
		done
		echo
		echo '```json'
		cat "$WORK"/C*.jsonl 2>/dev/null
		echo '```'
	} >"$CL_OUT"
	cat "$CL_OUT"
	log "cluster results written to $CL_OUT"
	[[ $CL_FAILED == 0 ]]
}
