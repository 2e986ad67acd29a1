#!/usr/bin/env bash
# Loopback Kannel (bearerbox + smsbox + fake SMSC) for tests.
#
#   scripts/kannel.sh install      # apt-get install kannel kannel-extras (idempotent)
#   scripts/kannel.sh start DIR    # write DIR/kannel.conf, start bearerbox + smsbox, wait until ready
#   scripts/kannel.sh stop DIR     # stop what `start DIR` started (pid files in DIR), wait for exit
#   scripts/kannel.sh status DIR   # print bearerbox's status page
#
# Environment (defaults):
#   KANNEL_ADMIN_PORT=13000  KANNEL_ADMIN_PASSWORD=adminpw
#   KANNEL_SMSBOX_PORT=13001 KANNEL_SMSC_PORT=20000 (bearerbox LISTENS here; fakesmsc / tests connect)
#   KANNEL_SENDSMS_PORT=13013 KANNEL_USER=notifier KANNEL_PASSWORD=secret KANNEL_SENDER=7377
#   KANNEL_GET_URL=http://127.0.0.1:8080/v1/sms/kannel?token=${INGEST_TOKEN:-dev-ingest-token-0123}&id=%I&from=%p&to=%P&ts=%T&text=%a
#   KANNEL_HTTP_RETRY=5 KANNEL_HTTP_QUEUE_DELAY=1 (MO get-url retries on non-2xx / refused, seconds apart)
#   KANNEL_OUTGOING_QUEUE_LIMIT=-1 (bearerbox MT queue limit; beyond it sendsms answers 503)
#   KANNEL_DENIED_PREFIX= (numbers the fake SMSC has no route to, e.g. +7999: sendsms answers
#     403 "Not routable" and a dlr-mask 2/16 report says failed, status 16)
#   KANNEL_LOG_LEVEL=0 (0 debug .. 4 panic, for DIR/*.log)
#   KANNEL_START_TIMEOUT=20 KANNEL_STOP_TIMEOUT=15 (seconds)
# start writes DIR/kannel.conf, DIR/kannel.env, DIR/{bearerbox,smsbox}.{pid,log,out}.
# See docs/kannel.md.
set -euo pipefail

BEARERBOX=${BEARERBOX:-/usr/sbin/bearerbox}
SMSBOX=${SMSBOX:-/usr/sbin/smsbox}
FAKESMSC=${FAKESMSC:-/usr/lib/kannel/test/fakesmsc}

ADMIN_PORT=${KANNEL_ADMIN_PORT:-13000}
ADMIN_PASSWORD=${KANNEL_ADMIN_PASSWORD:-adminpw}
SMSBOX_PORT=${KANNEL_SMSBOX_PORT:-13001}
SMSC_PORT=${KANNEL_SMSC_PORT:-20000}
SENDSMS_PORT=${KANNEL_SENDSMS_PORT:-13013}
KUSER=${KANNEL_USER:-notifier}
KPASSWORD=${KANNEL_PASSWORD:-secret}
SENDER=${KANNEL_SENDER:-7377}
GET_URL=${KANNEL_GET_URL:-"http://127.0.0.1:8080/v1/sms/kannel?token=${INGEST_TOKEN:-dev-ingest-token-0123}&id=%I&from=%p&to=%P&ts=%T&text=%a"}
HTTP_RETRY=${KANNEL_HTTP_RETRY:-5}
HTTP_QUEUE_DELAY=${KANNEL_HTTP_QUEUE_DELAY:-1}
LOG_LEVEL=${KANNEL_LOG_LEVEL:-0}
DENIED_PREFIX=${KANNEL_DENIED_PREFIX:-}
START_TIMEOUT=${KANNEL_START_TIMEOUT:-20}
STOP_TIMEOUT=${KANNEL_STOP_TIMEOUT:-15}

die() { echo "kannel.sh: $*" >&2; exit 1; }
log() { echo "kannel.sh: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

listening() { # port -> 0 if some socket LISTENs on that TCP port (reads /proc, connects to nothing:
    # a probe connection to bearerbox's smsbox port would count as a box connecting)
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

http_get() { # port path -> body+headers on stdout (HTTP/1.0, no curl needed)
    local port=$1 path=$2
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    timeout 5 cat <&3 || true
    exec 3<&- 3>&-
}

running() { # pid -> 0 if it exists and is not a zombie
    local state
    [[ -r /proc/$1/stat ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

alive() { # pidfile -> 0 if the process in it runs and belongs to this DIR
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    running "$pid" || return 1
    # guard against pid reuse: the command line must name our config file
    has_our_conf "$pid"
}

has_our_conf() { # pid -> 0 if its command line has our config file as one argument
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ " $cmdline " == *" $CONF "* ]]
}

cmd_install() {
    if [[ -x $BEARERBOX && -x $SMSBOX && -x $FAKESMSC ]]; then
        log "kannel and kannel-extras already installed"
        return 0
    fi
    # As the README allows: root, or a user with sudo.
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "install needs root or sudo"
        sudo=(sudo)
    fi
    # Keep the package's init script from starting a system-wide bearerbox:
    # install a temporary policy-rc.d (exit 101 = action forbidden) if none exists.
    local created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local rc=0
    if ! apt-cache show kannel-extras >/dev/null 2>&1; then
        "${sudo[@]}" apt-get update -qq || rc=$?
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kannel kannel-extras || rc=$?
    if [[ $created_policy -eq 1 ]]; then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
    [[ $rc -eq 0 ]] || die "apt-get failed (rc $rc)"
    [[ -x $BEARERBOX && -x $SMSBOX && -x $FAKESMSC ]] || die "binaries missing after install"
    log "installed: $(dpkg-query -W -f='${Package} ${Version}\n' kannel kannel-extras | tr '\n' ' ')"
}

write_config() {
    local q='"'
    [[ $GET_URL != *$q* ]] || die "KANNEL_GET_URL must not contain a double quote"
    cat >"$CONF" <<CONF
# generated by scripts/kannel.sh start $DIR
group = core
admin-port = $ADMIN_PORT
admin-interface = 127.0.0.1
admin-password = "$ADMIN_PASSWORD"
status-password = "$ADMIN_PASSWORD"
admin-deny-ip = "*.*.*.*"
admin-allow-ip = "127.0.0.1"
smsbox-port = $SMSBOX_PORT
smsbox-interface = 127.0.0.1
box-deny-ip = "*.*.*.*"
box-allow-ip = "127.0.0.1"
dlr-storage = internal
# queued MT/MO survive a bearerbox restart within the same DIR
store-type = file
store-location = "$DIR/kannel.store"
sms-outgoing-queue-limit = ${KANNEL_OUTGOING_QUEUE_LIMIT:--1}
log-file = "$DIR/bearerbox.log"
log-level = $LOG_LEVEL
access-log = "$DIR/bearerbox-access.log"

# The fake SMSC: bearerbox LISTENS on this port, one client (fakesmsc or a test
# playing the phone network) at a time; line protocol, see docs/kannel.md.
group = smsc
smsc = fake
smsc-id = FAKE
port = $SMSC_PORT
our-host = 127.0.0.1
connect-allow-ip = "127.0.0.1"
${DENIED_PREFIX:+denied-prefix = \"$DENIED_PREFIX\"}

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = $SMSBOX_PORT
sendsms-port = $SENDSMS_PORT
sendsms-interface = 127.0.0.1
global-sender = "$SENDER"
mo-recode = true
# Without these Kannel drops an MO whose get-url fails (refused / 5xx): no retry at all.
http-request-retry = $HTTP_RETRY
http-queue-delay = $HTTP_QUEUE_DELAY
log-file = "$DIR/smsbox.log"
log-level = $LOG_LEVEL
access-log = "$DIR/smsbox-access.log"

group = sendsms-user
username = "$KUSER"
password = "$KPASSWORD"
default-sender = "$SENDER"
concatenation = true
max-messages = 5

group = sms-service
keyword = default
catch-all = true
max-messages = 0
omit-empty = true
get-url = "$GET_URL"
CONF
}

wait_ready() { # name pid port: wait until port LISTENs, while our child runs
    local name=$1 pid=$2 port=$3
    while :; do
        # the child may still be the forked shell (not yet exec'd): check the pid, not the cmdline
        if ! running "$pid"; then
            log "$name exited during start-up; last lines of its logs:"
            tail -n 20 "$DIR/$name.out" "$DIR/$name.log" >&2 2>/dev/null || true
            return 1
        fi
        listening "$port" && return 0
        if (( SECONDS >= DEADLINE )); then
            log "$name: port $port not listening after ${START_TIMEOUT}s"
            tail -n 20 "$DIR/$name.out" "$DIR/$name.log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
}

cmd_start() {
    [[ -x $BEARERBOX && -x $SMSBOX ]] || die "kannel not installed: run $0 install"
    mkdir -p "$DIR"
    if alive "$DIR/bearerbox.pid" || alive "$DIR/smsbox.pid"; then
        die "already running from $DIR (run: $0 stop $DIR)"
    fi
    local p
    for p in "$ADMIN_PORT" "$SMSBOX_PORT" "$SMSC_PORT" "$SENDSMS_PORT"; do
        if listening "$p"; then die "TCP port $p is already in use (KANNEL_*_PORT variables move ports)"; fi
    done
    write_config
    DEADLINE=$(( SECONDS + START_TIMEOUT ))

    # stdin/stdout/stderr redirected: a caller capturing our output must not
    # wait for EOF on pipes held by the daemons.
    "$BEARERBOX" -v 2 "$CONF" </dev/null >"$DIR/bearerbox.out" 2>&1 &
    BB_PID=$!
    echo "$BB_PID" >"$DIR/bearerbox.pid"
    if ! wait_ready bearerbox "$BB_PID" "$SMSBOX_PORT" ||
       ! wait_ready bearerbox "$BB_PID" "$ADMIN_PORT" ||
       ! wait_ready bearerbox "$BB_PID" "$SMSC_PORT"; then
        abort_start "bearerbox did not start (see $DIR/bearerbox.log)"
    fi

    "$SMSBOX" -v 2 "$CONF" </dev/null >"$DIR/smsbox.out" 2>&1 &
    SB_PID=$!
    echo "$SB_PID" >"$DIR/smsbox.pid"
    if ! wait_ready smsbox "$SB_PID" "$SENDSMS_PORT"; then
        abort_start "smsbox did not start (see $DIR/smsbox.log)"
    fi
    # sendsms port open is not enough: wait until bearerbox lists the smsbox connection
    while ! http_get "$ADMIN_PORT" "/status.txt?password=$ADMIN_PASSWORD" 2>/dev/null |
            grep -q 'smsbox:.*on-line'; do
        if (( SECONDS >= DEADLINE )); then
            abort_start "smsbox did not connect to bearerbox within ${START_TIMEOUT}s"
        fi
        running "$SB_PID" || abort_start "smsbox exited (see $DIR/smsbox.log)"
        sleep 0.1
    done

    cat >"$DIR/kannel.env" <<ENV
KANNEL_ADMIN_URL=http://127.0.0.1:$ADMIN_PORT
KANNEL_ADMIN_PASSWORD=$ADMIN_PASSWORD
KANNEL_SENDSMS_URL=http://127.0.0.1:$SENDSMS_PORT/cgi-bin/sendsms
KANNEL_USER=$KUSER
KANNEL_PASSWORD=$KPASSWORD
KANNEL_SMSC_HOST=127.0.0.1
KANNEL_SMSC_PORT=$SMSC_PORT
ENV
    echo "kannel up: bearerbox pid $(<"$DIR/bearerbox.pid"), smsbox pid $(<"$DIR/smsbox.pid");" \
         "sendsms http://127.0.0.1:$SENDSMS_PORT/cgi-bin/sendsms;" \
         "fake SMSC 127.0.0.1:$SMSC_PORT (bearerbox listens; connect to it); logs in $DIR"
}

terminate() { # name pid: SIGTERM, wait, SIGKILL after KANNEL_STOP_TIMEOUT
    local name=$1 pid=$2 deadline
    running "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( SECONDS + STOP_TIMEOUT ))
    while running "$pid"; do
        if (( SECONDS >= deadline )); then
            log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$(( SECONDS + 5 ))
            while running "$pid" && (( SECONDS < deadline )); do sleep 0.1; done
            break
        fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true  # reap, when we are the parent
    echo "stopped $name (pid $pid)"
}

stop_one() { # name: stop the process in DIR/name.pid if it is ours
    local name=$1 pidfile="$DIR/$1.pid"
    if alive "$pidfile"; then
        terminate "$name" "$(<"$pidfile")"
    fi
    rm -f "$pidfile"
}

abort_start() { # message: stop the children this start launched, then fail
    [[ -n ${SB_PID:-} ]] && terminate smsbox "$SB_PID" >&2
    [[ -n ${BB_PID:-} ]] && terminate bearerbox "$BB_PID" >&2
    rm -f "$DIR/smsbox.pid" "$DIR/bearerbox.pid"
    die "$1"
}

strays() { # exe... -> pids of such processes whose command line names our config file
    local d pid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [[ $pid != "$$" ]] || continue
        [[ " $* " == *" $(readlink "$d/exe" 2>/dev/null) "* ]] || continue
        if has_our_conf "$pid"; then echo "$pid"; fi
    done
    return 0
}

cmd_stop() {
    [[ -d $DIR ]] || die "no such directory: $DIR"
    # smsbox first, so bearerbox does not wait for it. smsbox re-spawns itself under a
    # NEW pid ~10 s after losing bearerbox ("Bearerbox is gone, restarting"), so also
    # look for boxes by our config path.
    local pid
    stop_one smsbox
    for pid in $(strays "$SMSBOX"); do terminate smsbox "$pid"; done
    stop_one bearerbox
    for pid in $(strays "$BEARERBOX" "$SMSBOX"); do terminate box "$pid"; done
}

cmd_status() {
    http_get "$ADMIN_PORT" "/status.txt?password=$ADMIN_PASSWORD"
}

[[ $# -ge 1 ]] || usage
case $1 in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    start|stop|status)
        [[ $# -eq 2 ]] || usage
        if [[ $1 == start ]]; then mkdir -p "$2"; fi
        DIR=$(cd "$2" 2>/dev/null && pwd) || die "cannot use directory $2"
        CONF="$DIR/kannel.conf"
        "cmd_$1" ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
