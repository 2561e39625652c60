# lib.sh: shell helpers shared by bench/run.sh and bench/compare.sh:
# locating the binaries, starting and stopping a private sidecar (its own
# temporary directory, secret, database, audit key, IPC sockets and port),
# reading numbers out of wsbench's flat JSON lines, medians, and the machine
# description for the results files. Sourced, never run.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO_DIR/build}
WSGATE_BIN=${WSGATE_BIN:-$BUILD_DIR/wsgate}
WSBENCH_BIN=${WSBENCH_BIN:-$BUILD_DIR/wsbench}

# Every connection is a file descriptor, in wsbench and in the sidecar.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Builds wsgate and wsbench when either is missing.
ensure_built() {
	if [[ -x $WSGATE_BIN && -x $WSBENCH_BIN ]]; then
		return 0
	fi
	log "building wsgate and wsbench in $BUILD_DIR"
	cmake -S "$REPO_DIR" -B "$BUILD_DIR" >/dev/null &&
		cmake --build "$BUILD_DIR" -j2 --target wsgate wsbench >/dev/null ||
		{ log "build failed"; return 1; }
}

# Whether the sidecar knows a flag (e.g. --audit), from its --help.
sidecar_has_flag() {
	"$WSGATE_BIN" --help 2>&1 | grep -q -- "^ *$1 "
}

# A TCP port on 127.0.0.1 that nothing answers on right now.
free_port() {
	local p i
	for i in $(seq 1 50); do
		p=$((20000 + RANDOM % 20000))
		if ! { (exec 3<>"/dev/tcp/127.0.0.1/$p"); } 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# GET /healthz answers 200.
healthy() {
	local port=$1 reply
	{ exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
	printf 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
	read -r -t 2 reply <&3 || true
	exec 3<&- 3>&-
	[[ $reply == "HTTP/1."?" 200"* ]]
}

# start_sidecar KEYKIND [extra sidecar flags...]
#   KEYKIND: hs256 (a fresh secret) or rs256 (a fresh RSA key pair; wsbench
#   then needs --rs256-key $SC_DIR/rsa.pem).
# Sets SC_DIR, SC_PORT, SC_PID, SC_CONTROL, SC_SECRET, SC_CMD (the exact
# command line). Returns non-zero (with the log tail on stderr) on failure.
start_sidecar() {
	local kind=$1 try keyflag
	shift
	SC_DIR=$(mktemp -d /tmp/wsbench.XXXXXX) || return 1
	(umask 077 && openssl rand -hex 32 >"$SC_DIR/secret")
	SC_SECRET=$SC_DIR/secret
	if [[ $kind == rs256 ]]; then
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
			-out "$SC_DIR/rsa.pem" 2>/dev/null &&
			openssl pkey -in "$SC_DIR/rsa.pem" -pubout \
				-out "$SC_DIR/rsa.pub.pem" 2>/dev/null ||
			{ log "openssl could not make an RSA key"; return 1; }
		keyflag=(--jwt-public-key "$SC_DIR/rsa.pub.pem")
	else
		keyflag=(--jwt-secret-file "$SC_DIR/secret")
	fi
	SC_CONTROL=ipc://$SC_DIR/control.ipc
	for try in 1 2 3 4 5; do
		SC_PORT=$(free_port) || return 1
		local cmd=("$WSGATE_BIN" --listen "127.0.0.1:$SC_PORT"
			--control "$SC_CONTROL" --inbound "ipc://$SC_DIR/inbound.ipc"
			--db "$SC_DIR/wsgate.db" --audit-key-file "$SC_DIR/audit.key"
			"${keyflag[@]}" --log-level warn "$@")
		SC_CMD="${cmd[*]}"
		"${cmd[@]}" >>"$SC_DIR/sidecar.log" 2>&1 &
		SC_PID=$!
		echo "$SC_PID" >"$SC_DIR/pid"
		local i
		for i in $(seq 1 100); do
			if healthy "$SC_PORT"; then
				return 0
			fi
			kill -0 "$SC_PID" 2>/dev/null || break
			sleep 0.1
		done
		stop_sidecar keep
		if ! grep -qi "in use\|busy" "$SC_DIR/sidecar.log"; then
			break
		fi
	done
	log "sidecar did not start: $SC_CMD"
	tail -5 "$SC_DIR/sidecar.log" >&2
	return 1
}

# stop_sidecar [keep]: SIGTERM, up to 10 s, then SIGKILL; removes SC_DIR
# unless "keep".
stop_sidecar() {
	if [[ -n ${SC_PID:-} ]] && kill -0 "$SC_PID" 2>/dev/null; then
		kill -TERM "$SC_PID" 2>/dev/null
		local i
		for i in $(seq 1 100); do
			kill -0 "$SC_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$SC_PID" 2>/dev/null || true
	fi
	[[ -n ${SC_PID:-} ]] && wait "$SC_PID" 2>/dev/null
	SC_PID=
	if [[ ${1:-} != keep && -n ${SC_DIR:-} ]]; then
		rm -rf "$SC_DIR"
		SC_DIR=
	fi
}

# jget KEY: the value of "KEY" in the JSON line on stdin (flat objects).
jget() {
	grep -o "\"$1\":[^,}]*" | head -1 | cut -d: -f2- | tr -d '"'
}

# vals FILE KEY: the values of KEY, one per JSON line of FILE.
vals() {
	[[ -f $1 ]] || return 0
	awk -v k="\"$2\":" '/^\{/ && index($0, k) {
		s = substr($0, index($0, k) + length(k))
		sub(/[,}].*/, "", s); gsub(/"/, "", s); print s }' "$1"
}

# median FILE KEY: median of KEY over the JSON lines of FILE ("-" if none).
median() {
	vals "$1" "$2" | sort -g | awk '{v[NR]=$1} END {
		if (NR == 0) { print "-"; exit }
		if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'
}

# range FILE KEY [decimals]: "min-max" of KEY over the JSON lines of FILE.
range() {
	vals "$1" "$2" | sort -g | awk -v d="${3:-0}" 'NR==1{lo=$1} {hi=$1} END {
		if (NR == 0) print "-"
		else if (lo == hi) printf "%.*f", d, lo
		else printf "%.*f-%.*f", d, lo, d, hi }'
}

# runs_ok FILE: "k/n" runs with ok=1.
runs_ok() {
	local n k
	n=$(grep -c '^{' "$1" 2>/dev/null || true)
	k=$(grep -c '"ok":1' "$1" 2>/dev/null || true)
	echo "${k:-0}/${n:-0}"
}

# Rounds a number for tables: fmt N [decimals]
fmt() {
	[[ $1 == - || -z $1 ]] && { echo -; return; }
	awk -v v="$1" -v d="${2:-0}" 'BEGIN { printf "%.*f", d, v }'
}

# The machine and software, as Markdown lines.
machine_md() {
	local cpu mem kernel
	cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
	mem=$(awk '/MemTotal/ { printf "%.1f GiB", $2/1048576 }' /proc/meminfo)
	kernel=$(uname -r)
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- machine: $(nproc) CPUs ($cpu), $mem RAM, Linux $kernel"
	echo "- versions: $(dpkg-query -W -f='${Package} ${Version}, ' \
		libwebsockets17 libnng1 libsqlite3-0 libssl3 libprotobuf-c1 \
		2>/dev/null | sed 's/, $//')"
	echo "- wsgate: binary $WSGATE_BIN (built $(date -u -r "$WSGATE_BIN" '+%Y-%m-%d %H:%M UTC' 2>/dev/null)); source tree at $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo unknown) when the report was written"
}
