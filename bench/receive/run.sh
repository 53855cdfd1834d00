#!/usr/bin/env bash
# Receive benchmark: how many 1 KiB messages per second Tern and Postfix
# accept over SMTP (each keeps every message durably, fsync before 250, and
# delivers nothing) on this machine, driven by Postfix's smtp-source.
#
# Usage: bench/receive/run.sh            (run as root; see bench/README.md)
# Knobs (environment): MESSAGES ROUNDS SESSIONS MSG_SIZE WARMUP
#   REUSE_CONNECTIONS TERN_COMMIT TERN_PORT POSTFIX_PORT SERVERS SKIP_BUILD TERN_BIN
#   RUN_TIMEOUT BUILD_TIMEOUT KEEP_TMP OUT_DIR CHART TMPDIR SPOOL_FS SPOOL_FS_SIZE
#   SPOOL_FS_MKFS SETTLE
# Defaults: 5000 messages x 3 rounds, 20 sessions, 1024-byte bodies, 200
# warm-up messages, Tern on 127.0.0.1:2526, Postfix on 127.0.0.1:2527, Tern's
# spool in segment commit mode, the default (TERN_COMMIT=file or batch for a file per message),
# both queues in the temp dir (SPOOL_FS=loop gives each server's queue a
# fresh ext4 of its own on a loop device over an image file in the temp dir,
# mkfs options in SPOOL_FS_MKFS), and a wait of SETTLE=61 seconds after the
# servers start and before the first message, so that no inode freed before
# the run is still "recently deleted" for ext4 (see docs/BENCHMARKS.md).
# Output: bench/out/receive.csv, bench/out/receive-summary.txt and
# docs/bench/receive.png.
set -euo pipefail

if (($# > 0)); then
	case $1 in
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "usage: bench/receive/run.sh (no arguments; configure with environment variables, see --help)" >&2
		exit 2
		;;
	esac
fi

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/../.." && pwd)
HELPERS="$SCRIPT_DIR/helpers.py"

MESSAGES=${MESSAGES:-5000}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-20}
MSG_SIZE=${MSG_SIZE:-1024}
WARMUP=${WARMUP:-200}
REUSE_CONNECTIONS=${REUSE_CONNECTIONS:-0}
TERN_COMMIT=${TERN_COMMIT:-segment}
TERN_PORT=${TERN_PORT:-2526}
POSTFIX_PORT=${POSTFIX_PORT:-2527}
SERVERS=${SERVERS:-"tern postfix"}
SKIP_BUILD=${SKIP_BUILD:-0}
TERN_BIN=${TERN_BIN:-"${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/tern"}
RUN_TIMEOUT=${RUN_TIMEOUT:-}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-3600}
KEEP_TMP=${KEEP_TMP:-0}
OUT_DIR=${OUT_DIR:-"$REPO_ROOT/bench/out"}
CHART=${CHART:-}
SPOOL_FS=${SPOOL_FS:-tmpdir}
SETTLE=${SETTLE:-61}
SPOOL_FS_SIZE=${SPOOL_FS_SIZE:-4G}
SENDER=sender@bench.test
RECIPIENT=rcpt@bench.test
CLIENT_HELO=client.bench.test
STARTUP_TIMEOUT=30 # seconds for a server to greet with 220
STOP_TIMEOUT=10    # seconds between SIGTERM and SIGKILL

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- knobs ---
[[ $MESSAGES =~ ^[0-9]+$ && -z $RUN_TIMEOUT ]] && RUN_TIMEOUT=$((600 + MESSAGES / 10))
for knob in MESSAGES ROUNDS SESSIONS MSG_SIZE WARMUP TERN_PORT POSTFIX_PORT RUN_TIMEOUT BUILD_TIMEOUT SETTLE; do
	[[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer (got '${!knob}')"
done
((MESSAGES > 0 && ROUNDS > 0 && SESSIONS > 0)) || die "MESSAGES, ROUNDS and SESSIONS must be > 0"
((TERN_PORT != POSTFIX_PORT)) || die "TERN_PORT and POSTFIX_PORT must differ"
[[ $TERN_COMMIT == batch || $TERN_COMMIT == file || $TERN_COMMIT == segment ]] || die "TERN_COMMIT must be segment, batch or file (got '$TERN_COMMIT')"
[[ $SPOOL_FS == loop || $SPOOL_FS == tmpdir ]] || die "SPOOL_FS must be loop or tmpdir (got '$SPOOL_FS')"
[[ $SPOOL_FS_SIZE =~ ^[0-9]+[KMG]?$ ]] || die "SPOOL_FS_SIZE must be a size like 4G (got '$SPOOL_FS_SIZE')"
RUN_TERN=0
RUN_POSTFIX=0
for s in $SERVERS; do
	case $s in
	tern) RUN_TERN=1 ;;
	postfix) RUN_POSTFIX=1 ;;
	*) die "SERVERS may only contain 'tern' and 'postfix' (got '$s')" ;;
	esac
done
((RUN_TERN + RUN_POSTFIX > 0)) || die "SERVERS is empty"
if [[ -z $CHART ]]; then
	# The committed chart only ever shows a full comparison.
	if ((RUN_TERN && RUN_POSTFIX)); then
		CHART="$REPO_ROOT/docs/bench/receive.png"
	else
		CHART="$OUT_DIR/receive.png"
	fi
fi
SMTP_SOURCE_FLAGS=(-s "$SESSIONS" -l "$MSG_SIZE" -M "$CLIENT_HELO" -f "$SENDER" -t "$RECIPIENT")
if [[ $REUSE_CONNECTIONS == 1 ]]; then
	SMTP_SOURCE_FLAGS+=(-d) # many messages per connection
fi

# --------------------------------------------------------- dependencies ---
APT_UPDATED=0
apt_install() {
	((EUID == 0)) || die "need root to install $* (apt-get)"
	command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
	log "installing $* with apt-get"
	if ((!APT_UPDATED)); then
		timeout 600 apt-get update -qq || warn "apt-get update failed"
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@" >&2
}

PATH="$PATH:/usr/sbin:/sbin" # postfix, postconf, smtp-source live there
command -v python3 >/dev/null || apt_install python3
if ((RUN_POSTFIX)) || ! command -v smtp-source >/dev/null; then
	# smtp-source ships with Postfix; Postfix is also the comparison server.
	if ! command -v postconf >/dev/null || [[ ! -x /usr/sbin/smtp-source ]]; then
		((EUID == 0)) || die "need root to install postfix"
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		apt_install postfix
	fi
fi
SMTP_SOURCE=$(command -v smtp-source) || die "smtp-source not found (package postfix)"
if ! command -v gnuplot >/dev/null; then
	apt_install gnuplot-nox || warn "could not install gnuplot-nox; will try matplotlib for the chart"
fi
if ((RUN_POSTFIX)); then
	((EUID == 0)) || die "run as root: starting a private Postfix instance needs root"
fi
if [[ $SPOOL_FS == loop ]]; then
	((EUID == 0)) || die "run as root: SPOOL_FS=loop mounts a filesystem (or set SPOOL_FS=tmpdir)"
	for tool in losetup mkfs.ext4 mount umount; do
		command -v "$tool" >/dev/null || die "$tool not found (packages mount, e2fsprogs)"
	done
fi

# ------------------------------------------------------------ temp dirs ---
WORK=$(mktemp -d -t tern-bench-receive.XXXXXX)
chmod 755 "$WORK" # Postfix daemons (user postfix) must traverse it
TERN_PID=
PF_ETC="$WORK/postfix/etc"
PF_QUEUE= # set by spool_dir when Postfix runs
TERN_DATA=
PF_STARTED=0

# Each server's queue on a fresh filesystem of its own: an image file in the
# temp dir (so on the disk TMPDIR names), a loop device with direct I/O (no
# second page cache), ext4 with mkfs defaults. A fresh filesystem has no
# history: on a long-used one, what earlier runs and tests deleted moves both
# servers' rates from run to run (see docs/BENCHMARKS.md).
LOOP_DEVS=()
MOUNTS=()
spool_dir() { # name -> sets SPOOL_DIR
	local name=$1
	SPOOL_DIR="$WORK/fs-$name"
	mkdir -p "$SPOOL_DIR"
	[[ $SPOOL_FS == loop ]] || return 0
	local img="$WORK/fs-$name.img" dev
	truncate -s "$SPOOL_FS_SIZE" "$img"
	dev=$(losetup --find --show --direct-io=on "$img") || die "losetup failed for $img"
	LOOP_DEVS+=("$dev")
	mkfs.ext4 -q -F ${SPOOL_FS_MKFS:-} "$dev" >&2 || die "mkfs.ext4 $dev failed"
	mount "$dev" "$SPOOL_DIR" || die "mount $dev $SPOOL_DIR failed"
	MOUNTS+=("$SPOOL_DIR")
	chmod 755 "$SPOOL_DIR"
	log "$name's queue: fresh ext4 on $dev ($SPOOL_FS_SIZE image $img) at $SPOOL_DIR"
}
release_spool_fs() {
	local m d
	for m in "${MOUNTS[@]}"; do umount "$m" || umount -l "$m" || warn "umount $m failed"; done
	MOUNTS=()
	for d in "${LOOP_DEVS[@]}"; do losetup -d "$d" || warn "losetup -d $d failed"; done
	LOOP_DEVS=()
}

stop_tern() {
	[[ -n $TERN_PID ]] || return 0
	local pid=$TERN_PID rc=0
	TERN_PID=
	if alive "$pid"; then
		log "stopping Tern (pid $pid, SIGTERM)"
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + STOP_TIMEOUT))
		while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
		if alive "$pid"; then
			warn "Tern did not exit within ${STOP_TIMEOUT}s of SIGTERM; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || rc=$?
	((rc == 0)) || warn "Tern exited with status $rc"
}

stop_postfix() {
	((PF_STARTED)) || return 0
	PF_STARTED=0
	log "stopping Postfix (postfix -c $PF_ETC stop)"
	local master
	master=$(tr -dc '0-9' <"$PF_QUEUE/pid/master.pid" 2>/dev/null || true)
	timeout 30 postfix -c "$PF_ETC" stop >&2 || warn "postfix stop failed"
	if [[ -n $master ]]; then
		local deadline=$((SECONDS + STOP_TIMEOUT))
		while alive "$master" && ((SECONDS < deadline)); do sleep 0.1; done
		if alive "$master"; then
			warn "Postfix master $master still running; sending SIGKILL"
			kill -KILL "$master" 2>/dev/null || true
		fi
	fi
}

# alive PID: running and not a zombie
alive() {
	local state
	state=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z && $state != X ]]
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if ((rc != 0)); then
		[[ -s $WORK/tern.log ]] && { echo "--- last lines of the Tern log:" >&2; tail -n 20 "$WORK/tern.log" >&2; }
		[[ -s $WORK/postfix/maillog ]] && { echo "--- last lines of the Postfix log:" >&2; tail -n 20 "$WORK/postfix/maillog" >&2; }
	fi
	stop_tern
	stop_postfix
	release_spool_fs
	if [[ $KEEP_TMP == 1 ]]; then
		log "kept temporary files in $WORK"
	else
		rm -rf -- "$WORK"
	fi
	((rc == 0)) || log "FAILED (exit status $rc)"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

helper() { python3 "$HELPERS" "$@"; }

check_port_free() { # name port
	if helper port-in-use 127.0.0.1 "$2"; then
		die "port $2 for $1 is already in use; pick another with ${1^^}_PORT=..."
	fi
}

# ---------------------------------------------------------------- build ---
if ((RUN_TERN)); then
	if [[ $SKIP_BUILD != 1 ]]; then
		if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
			# shellcheck source=/dev/null
			. "$HOME/.cargo/env"
		fi
		command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs)"
		log "building Tern: cargo build --release -p tern"
		(cd "$REPO_ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release -p tern) ||
			die "cargo build --release -p tern failed"
	fi
	[[ -x $TERN_BIN ]] || die "Tern binary not found at $TERN_BIN"
fi

# --------------------------------------------------------- machine info ---
FS_TYPE=$(df -PT "$WORK" | awk 'NR == 2 { print $2 }')
FS_INFO="$FS_TYPE on $(df -P "$WORK" | awk 'NR == 2 { print $1 }') ($(findmnt -no OPTIONS -T "$WORK" 2>/dev/null || echo '?'))"
if [[ $SPOOL_FS == loop ]]; then
	QUEUE_FS="each queue on a fresh $SPOOL_FS_SIZE ext4 (mkfs defaults, journal) on a loop device over a file in $WORK"
else
	QUEUE_FS="both queues in $WORK"
fi
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
MEM_GIB=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
KERNEL=$(uname -sr)
NPROC=$(nproc)
PF_VERSION=$(postconf -dh mail_version 2>/dev/null || echo '?')
if TERN_REV=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null); then
	git -C "$REPO_ROOT" diff --quiet HEAD -- 2>/dev/null || TERN_REV="$TERN_REV+dirty"
else
	TERN_REV="(no commit)"
fi
if [[ $FS_TYPE == tmpfs ]]; then
	warn "temp dir $WORK is on tmpfs: fsync is free there, numbers will not reflect disk durability (set TMPDIR)"
fi

# ----------------------------------------------------------------- Tern ---
TERN_CONF="$WORK/tern.toml"
TERN_COUNT_OK=1
start_tern() {
	check_port_free tern "$TERN_PORT"
	spool_dir tern
	TERN_DATA="$SPOOL_DIR/tern-data"
	mkdir -p "$TERN_DATA"
	cat >"$TERN_CONF" <<EOF
[server]
hostname = "tern.bench.test"
data_dir = "$TERN_DATA"

[relay]
domains = ["localhost", "bench.test"]
networks = ["127.0.0.0/8"]

[admin]
listen = "127.0.0.1:0"

# Accept-only, like the Postfix below whose mail all goes to hold: keep every
# message in incoming/ and deliver nothing.
[queue]
deliver = false

[spool]
commit = "$TERN_COMMIT"

[[listener]]
name = "bench"
address = "127.0.0.1:$TERN_PORT"
max_connections = 1000
max_connections_per_client = 1000
EOF
	log "starting Tern on 127.0.0.1:$TERN_PORT ($TERN_BIN serve --config $TERN_CONF)"
	"$TERN_BIN" serve --config "$TERN_CONF" </dev/null >"$WORK/tern.log" 2>&1 &
	TERN_PID=$!
	local banner
	banner=$(helper wait-banner 127.0.0.1 "$TERN_PORT" "$STARTUP_TIMEOUT" "$TERN_PID") ||
		die "Tern did not come up on 127.0.0.1:$TERN_PORT (log: $WORK/tern.log)"
	log "Tern greets: $banner"
}

# Sets QCOUNT to the number of queued messages, or '?' if unknown.
tern_queue_count() {
	QCOUNT='?'
	((TERN_COUNT_OK)) || return 0
	local json n
	if json=$(timeout 300 "$TERN_BIN" queue list --json --config "$TERN_CONF" 2>>"$WORK/tern-queue-list.err") &&
		n=$(helper count-json <<<"$json" 2>>"$WORK/tern-queue-list.err"); then
		QCOUNT=$n
	else
		warn "'tern queue list --json' failed; not verifying Tern's message counts:"
		sed 's/^/    /' "$WORK/tern-queue-list.err" | tail -n 5 >&2
		TERN_COUNT_OK=0
	fi
}

# -------------------------------------------------------------- Postfix ---
start_postfix() {
	check_port_free postfix "$POSTFIX_PORT"
	spool_dir postfix
	PF_QUEUE="$SPOOL_DIR/queue"
	mkdir -p "$PF_ETC" "$PF_QUEUE" "$WORK/postfix/data"
	chown postfix "$WORK/postfix/data"
	# An accept-only Postfix: the usual smtpd -> cleanup path with its
	# default fsync of every queue file before 250, but every message goes to
	# the hold queue, so qmgr never schedules a delivery (Tern does not
	# deliver yet either). Nothing else is tuned.
	cat >"$PF_ETC/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $WORK/postfix/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = $WORK/postfix/maillog
maillog_file_prefixes = $WORK
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = \$myhostname
mydestination =
relay_domains = localhost, bench.test
local_recipient_maps =
alias_maps =
alias_database =
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
# Accept-only: park every accepted message in the hold queue.
smtpd_data_restrictions = check_client_access static:HOLD
default_process_limit = 100
smtp_dns_support_level = disabled
disable_dns_lookups = yes
EOF
	# No chroot (the queue is under a temp dir), only the services needed to
	# accept mail and to run postqueue/showq. No port 25, no pickup.
	sed "s/@LISTEN@/127.0.0.1:$POSTFIX_PORT/" "$REPO_ROOT/testpeers/postfix/master.cf.in" >"$PF_ETC/master.cf"
	log "checking the Postfix configuration (postfix -c $PF_ETC check)"
	timeout 60 postfix -c "$PF_ETC" check >&2 || die "postfix check failed"
	log "starting Postfix $PF_VERSION on 127.0.0.1:$POSTFIX_PORT"
	PF_STARTED=1
	timeout 60 postfix -c "$PF_ETC" start >&2 || die "postfix start failed"
	local banner
	banner=$(helper wait-banner 127.0.0.1 "$POSTFIX_PORT" "$STARTUP_TIMEOUT") ||
		die "Postfix did not greet on 127.0.0.1:$POSTFIX_PORT (log: $WORK/postfix/maillog)"
	log "Postfix greets: $banner"
}

postfix_queue_count() {
	QCOUNT=$(timeout 300 postqueue -c "$PF_ETC" -j | helper count-postqueue) ||
		die "could not count Postfix's queue (or mail left the hold queue)"
}

queue_count() { # server
	case $1 in
	tern) tern_queue_count ;;
	postfix) postfix_queue_count ;;
	esac
}

port_of() { if [[ $1 == tern ]]; then echo "$TERN_PORT"; else echo "$POSTFIX_PORT"; fi; }
label_of() { if [[ $1 == tern ]]; then echo "Tern"; else echo "Postfix"; fi; }

# ---------------------------------------------------------- measurement ---
mkdir -p "$OUT_DIR"
CSV="$OUT_DIR/receive.csv"
CSV_TMP="$WORK/receive.csv"
RUN_STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "timestamp,server,phase,round,messages,sessions,message_bytes,reuse_connections,seconds,messages_per_second" >"$CSV_TMP"
declare -a RATES_tern=() RATES_postfix=()

# measure SERVER PHASE ROUND COUNT
measure() {
	local server=$1 phase=$2 round=$3 count=$4
	local port before after elapsed rate logf
	port=$(port_of "$server")
	logf="$WORK/smtp-source-$server-$phase-$round.log"
	queue_count "$server"
	before=$QCOUNT
	timeout 120 sync # flush the other run's dirty pages outside the timed window
	if ! elapsed=$(helper timed --timeout "$RUN_TIMEOUT" --log "$logf" -- \
		"$SMTP_SOURCE" "${SMTP_SOURCE_FLAGS[@]}" -m "$count" "127.0.0.1:$port"); then
		sed 's/^/    /' "$logf" >&2
		die "smtp-source against $(label_of "$server") failed ($phase $round)"
	fi
	if [[ -s $logf ]]; then
		warn "smtp-source printed:"
		sed 's/^/    /' "$logf" | head -n 20 >&2
	fi
	if [[ $server == tern ]] && ! alive "$TERN_PID"; then die "Tern died during the run"; fi
	queue_count "$server"
	after=$QCOUNT
	if [[ $before != '?' && $after != '?' ]]; then
		(((after - before) == count)) ||
			die "$(label_of "$server") queue grew by $((after - before)), expected $count ($before -> $after)"
	fi
	rate=$(helper rate "$count" "$elapsed")
	log "$(printf '%-7s %-7s %-2s %6d msgs in %8.3f s = %8.1f msg/s (queue %s -> %s)' \
		"$(label_of "$server")" "$phase" "$round" "$count" "$elapsed" "$rate" "$before" "$after")"
	echo "$RUN_STAMP,$server,$phase,$round,$count,$SESSIONS,$MSG_SIZE,$REUSE_CONNECTIONS,$elapsed,$rate" >>"$CSV_TMP"
	if [[ $phase == measure ]]; then
		local -n rates="RATES_$server"
		rates+=("$rate")
	fi
}

((RUN_TERN)) && check_port_free tern "$TERN_PORT"
((RUN_POSTFIX)) && check_port_free postfix "$POSTFIX_PORT"
((RUN_TERN)) && start_tern
((RUN_POSTFIX)) && start_postfix

if ((SETTLE > 0)); then
	# ext4 without a journal skips, and reads the inode table for, every inode
	# freed in the last 30 s (60 s while its block is dirty) when it allocates
	# one: files deleted just before the run (an earlier run's cleanup, a test
	# suite) would slow both servers' file creation by an amount that depends on
	# what ran before, not on the server. Both servers wait out that window.
	timeout 120 sync
	log "waiting ${SETTLE}s for the filesystem's recently freed inodes to age (SETTLE=0 to skip)"
	sleep "$SETTLE"
fi

SERVER_LIST=()
((RUN_TERN)) && SERVER_LIST+=(tern)
((RUN_POSTFIX)) && SERVER_LIST+=(postfix)

if ((WARMUP > 0)); then
	for s in "${SERVER_LIST[@]}"; do measure "$s" warmup 0 "$WARMUP"; done
fi
for ((r = 1; r <= ROUNDS; r++)); do
	# Alternate the order (ABBA...) so neither server always runs first.
	if ((r % 2 == 1)); then order=("${SERVER_LIST[@]}"); else
		order=()
		for ((i = ${#SERVER_LIST[@]} - 1; i >= 0; i--)); do order+=("${SERVER_LIST[i]}"); done
	fi
	for s in "${order[@]}"; do measure "$s" measure "$r" "$MESSAGES"; done
done

cp "$CSV_TMP" "$CSV"

# -------------------------------------------------------------- summary ---
MED_tern=
MED_postfix=
((RUN_TERN)) && MED_tern=$(helper median "${RATES_tern[@]}")
((RUN_POSTFIX)) && MED_postfix=$(helper median "${RATES_postfix[@]}")
RATIO=
if ((RUN_TERN && RUN_POSTFIX)); then
	RATIO=$(awk -v t="$MED_tern" -v p="$MED_postfix" 'BEGIN { printf "%.2f", t / p }')
fi
DATE=$(date +%Y-%m-%d)
CONN_DESC="one connection per message"
[[ $REUSE_CONNECTIONS == 1 ]] && CONN_DESC="connections reused"

SUMMARY="$WORK/summary.txt"
{
	echo "=== Tern receive benchmark ($DATE) ==="
	echo "workload : smtp-source, $SESSIONS sessions, $MSG_SIZE-byte bodies, $CONN_DESC,"
	echo "           $MESSAGES messages per run, $ROUNDS rounds (alternating), warm-up $WARMUP"
	echo "machine  : $NPROC CPUs ($CPU_MODEL), ${MEM_GIB} GiB RAM, $KERNEL"
	echo "temp fs  : $FS_INFO"
	echo "queue fs : $QUEUE_FS"
	echo "versions : Tern $TERN_REV, Postfix $PF_VERSION"
	((RUN_TERN)) && printf 'Tern     : %10.1f msg/s median   (rounds: %s)\n' "$MED_tern" "${RATES_tern[*]}"
	((RUN_POSTFIX)) && printf 'Postfix  : %10.1f msg/s median   (rounds: %s)\n' "$MED_postfix" "${RATES_postfix[*]}"
	[[ -n $RATIO ]] && echo "ratio    : Tern/Postfix = $RATIO"
	echo "raw CSV  : $CSV"
	echo "chart    : $CHART"
} >"$SUMMARY"
cp "$SUMMARY" "$OUT_DIR/receive-summary.txt"

# ---------------------------------------------------------------- chart ---
mkdir -p "$(dirname -- "$CHART")"
BARS="$WORK/bars.dat"
ROUNDS_DAT="$WORK/rounds.dat"
: >"$BARS"
: >"$ROUNDS_DAT"
idx=0
for s in "${SERVER_LIST[@]}"; do
	med_var="MED_$s"
	label=$(label_of "$s")
	[[ $s == postfix ]] && label="Postfix $PF_VERSION"
	[[ $s == tern ]] && label="Tern $TERN_REV"
	color=$([[ $s == tern ]] && echo 1 || echo 2)
	printf '%d\t"%s"\t%s\t%d\n' "$idx" "$label" "${!med_var}" "$color" >>"$BARS"
	declare -n round_rates="RATES_$s"
	for v in "${round_rates[@]}"; do printf '%d %s\n' "$idx" "$v" >>"$ROUNDS_DAT"; done
	unset -n round_rates
	idx=$((idx + 1))
done
TITLE="SMTP receive throughput, $DATE: $MESSAGES messages x $ROUNDS rounds (median)"
SUBTITLE="smtp-source: $SESSIONS sessions, $MSG_SIZE-byte bodies, $CONN_DESC, fsync before 250"
FS_DESC=$FS_TYPE
[[ $SPOOL_FS == loop ]] && FS_DESC="each queue on a fresh ext4 (loop on $FS_TYPE)"
SUBTITLE2="$NPROC CPUs, $KERNEL, $FS_DESC${RATIO:+; Tern/Postfix = $RATIO}"

if command -v gnuplot >/dev/null; then
	TERM_SPEC="pngcairo size 900,560 noenhanced font 'sans,11'"
	gnuplot -e "set terminal pngcairo" >/dev/null 2>&1 || TERM_SPEC="png size 900,560 noenhanced"
	timeout 60 gnuplot >&2 <<EOF || die "gnuplot failed"
set terminal $TERM_SPEC
set output "$CHART"
set title "$TITLE\n$SUBTITLE\n$SUBTITLE2"
set ylabel "messages / second (higher is better)"
set style fill solid 0.85 border -1
set boxwidth 0.5
set xrange [-0.6:$((idx - 1)).6]
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set grid ytics
set xtics nomirror scale 0
set key top right
set linetype 1 lc rgb "#2a7ab0"
set linetype 2 lc rgb "#c0504d"
plot "$BARS" using 1:3:(0.5):4:xtic(2) with boxes lc variable notitle, \
     "" using 1:(\$3 / 2):(sprintf("%.0f msg/s", \$3)) with labels textcolor rgb "white" font ",14" notitle, \
     "$ROUNDS_DAT" using 1:2 with points pt 7 ps 0.8 lc rgb "black" title "each round"
EOF
elif python3 -c 'import matplotlib' 2>/dev/null; then
	helper chart "$CHART" "$TITLE" "$SUBTITLE; $SUBTITLE2" "$BARS" "$ROUNDS_DAT" || die "matplotlib chart failed"
else
	die "neither gnuplot nor python3 matplotlib is available for the chart (apt-get install gnuplot-nox)"
fi

echo >&2
cat "$SUMMARY"
