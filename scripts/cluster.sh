#!/usr/bin/env bash
# A local three-node RabbitMQ cluster of the project's own, beside the machine's broker
# (SPEC §5 "past one machine"; docs/operations.md, "A local cluster"). The nodes are
# meter-c1@localhost … meter-c3@localhost with their own AMQP ports, distribution
# ports, management ports, data, logs, config, plugins file and Erlang cookie, all
# under $CLUSTER_DIR: the machine's node (rabbit@localhost, 5672/15672) is never
# touched, and a careless join cannot reach it (another cookie).
#
#   scripts/cluster.sh start        # start what is not running, join, wait (idempotent)
#   scripts/cluster.sh stop [--purge]   # stop the nodes (--purge: and delete their data)
#   scripts/cluster.sh status       # each node: running or not, and the cluster's members
#   scripts/cluster.sh urls         # the AMQP_URL listing the three nodes (vhost: $2, default /)
#   scripts/cluster.sh pid N        # the OS process id of node N (1-3)
#   scripts/cluster.sh leader VHOST QUEUE   # the node number leading a quorum queue
#   scripts/cluster.sh ctl N ARGS…  # rabbitmqctl against node N
#
# Knobs: CLUSTER_DIR (/tmp/meter-cluster), CLUSTER_NAME (meter-c: nodes meter-c1…3;
# a second cluster on one machine needs a name and ports of its own, as .ci/run's
# does), CLUSTER_PORT (5701: nodes on 5701-5703, distribution 25701-25703,
# management 15701-15703), CLUSTER_TIMEOUT (seconds for
# start and join, 120). Management on every node: the test harness creates a vhost
# per test through it (shared::testing::TestBroker::cluster), and it still answers
# on the nodes that live when one is killed.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_DIR="${CLUSTER_DIR:-/tmp/meter-cluster}"
CLUSTER_PORT="${CLUSTER_PORT:-5701}"
CLUSTER_TIMEOUT="${CLUSTER_TIMEOUT:-120}"
RMQ_BIN=/usr/lib/rabbitmq/bin
NODES=(1 2 3)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }

[ -x "$RMQ_BIN/rabbitmq-server" ] || die "RabbitMQ is not installed ($RMQ_BIN/rabbitmq-server): apt-get install rabbitmq-server"

CLUSTER_NAME="${CLUSTER_NAME:-meter-c}"
node_name() { echo "$CLUSTER_NAME$1@localhost"; }
amqp_port() { echo $((CLUSTER_PORT + $1 - 1)); }
dist_port() { echo $((CLUSTER_PORT + 20000 + $1 - 1)); }
mgmt_port() { echo $((CLUSTER_PORT + 10000 + $1 - 1)); }
node_dir() { echo "$CLUSTER_DIR/c$1"; }

# Runs a command for node $1 with the node's own files in its environment, and HOME
# at $CLUSTER_DIR, so that server and CLI share the cluster's own cookie.
with_node() { # node command…
    local n="$1" d
    shift
    d=$(node_dir "$n")
    (
        export HOME="$CLUSTER_DIR" \
            RABBITMQ_NODENAME="$(node_name "$n")" \
            RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
            RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
            RABBITMQ_DIST_PORT="$(dist_port "$n")" \
            RABBITMQ_MNESIA_BASE="$d/mnesia" \
            RABBITMQ_LOG_BASE="$d/log" \
            RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
            RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
            RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
            RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
            RABBITMQ_PID_FILE="$d/pid" \
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
            ERL_EPMD_ADDRESS=127.0.0.1 \
            ERL_CRASH_DUMP="$CLUSTER_DIR/erl_crash.dump"
        exec "$@"
    )
}

ctl() { # node args…
    local n="$1"
    shift
    with_node "$n" "$RMQ_BIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@"
}

running() { ctl "$1" status >/dev/null 2>&1; }

# The node's VM, by its pid file: the one test that does not depend on the CLI (which
# can fail under load, or after the cookie is gone) or on the management API.
node_pid() { # node: prints the pid of a live node of ours
    local f
    f="$(node_dir "$1")/pid"
    [ -s "$f" ] || return 1
    local pid
    pid=$(cat "$f")
    # The node name is not on the VM's command line (RabbitMQ sets it at boot); it is
    # in the environment the VM was started with.
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(node_name "$1")" &&
        echo "$pid"
}
alive() { node_pid "$1" >/dev/null; }

# The management API answers these questions in a second; each rabbitmqctl call boots
# an Erlang VM (5-20 s on a busy 2-core machine), so it is kept for what only it does.
api() { # node path
    curl -fsS -m 10 -u guest:guest "http://127.0.0.1:$(mgmt_port "$1")/api/$2" 2>/dev/null
}
api_up() { api "$1" overview >/dev/null; }
api_nodes() { # node [running]: the cluster's members as node $1 sees them, one a line
    api "$1" nodes | python3 -c '
import json, sys
only_running = len(sys.argv) > 1
for n in json.load(sys.stdin):
    if n.get("running") or not only_running:
        print(n["name"])' ${2:+running}
}

prepare() { # node
    local n="$1" d
    d=$(node_dir "$n")
    mkdir -p "$d/mnesia" "$d/log"
    if [ ! -s "$CLUSTER_DIR/.erlang.cookie" ]; then
        # The cluster's own cookie: not the machine node's.
        (umask 077; head -c 64 /dev/urandom | tr -dc 'A-Z' | head -c 20 >"$CLUSTER_DIR/.erlang.cookie")
        [ -s "$CLUSTER_DIR/.erlang.cookie" ] || die "could not write $CLUSTER_DIR/.erlang.cookie"
        chmod 400 "$CLUSTER_DIR/.erlang.cookie"
    fi
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
cluster_partition_handling = pause_minority
log.file.level = info
log.console = false
EOF
    echo '[rabbitmq_management].' >"$d/enabled_plugins"
    : >"$d/rabbitmq-env.conf"
}

# Runs "$@" every second until it succeeds or $CLUSTER_TIMEOUT passes.
await() { # what command…
    local what="$1"; shift
    local until=$(( $(date +%s) + CLUSTER_TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$until" ] || return 1
        sleep 1
    done
}

members_of() { # node: the running nodes of its cluster, one a line
    api_nodes "$1" running 2>/dev/null ||
        ctl "$1" eval 'lists:foreach(fun(N) -> io:format("~s~n", [N]) end, rabbit_nodes:all_running()).' 2>/dev/null | grep '@' || true
}

joined() { # node: a member of node 1's cluster
    api_nodes 1 2>/dev/null | grep -qx "$(node_name "$1")" ||
        ctl "$1" eval 'lists:foreach(fun(N) -> io:format("~s~n", [N]) end, rabbit_nodes:all()).' 2>/dev/null | grep -qx "$(node_name 1)"
}

all_up() { # the three management APIs answer and node 1 sees three running members
    for n in "${NODES[@]}"; do api_up "$n" || return 1; done
    [ "$(api_nodes 1 running 2>/dev/null | wc -l)" -eq 3 ]
}

started=()
start_node() { # node
    local n="$1"
    if alive "$n" || api_up "$n"; then return 0; fi
    started+=("$n")
    prepare "$n"
    log "starting $(node_name "$n") (AMQP $(amqp_port "$n"), management $(mgmt_port "$n"))"
    with_node "$n" "$RMQ_BIN/rabbitmq-server" -detached >>"$(node_dir "$n")/log/start.out" 2>&1 ||
        die "$(node_name "$n") did not start: see $(node_dir "$n")/log/"
}

cmd_start() {
    if all_up; then
        log "cluster up: $(api_nodes 1 running | sort | tr '\n' ' ')"
        return 0
    fi
    mkdir -p "$CLUSTER_DIR"
    for n in "${NODES[@]}"; do start_node "$n"; done
    for n in "${started[@]}"; do
        # await_startup fails (rc 69) until the node exists: retried with the deadline.
        await "$(node_name "$n")" ctl "$n" await_startup ||
            die "$(node_name "$n") not up within ${CLUSTER_TIMEOUT}s: see $(node_dir "$n")/log/"
    done
    for n in 2 3; do
        joined "$n" && continue
        log "joining $(node_name "$n") to $(node_name 1)"
        # The CLI's warnings while a node joins are noise: kept in join.out.
        out="$(node_dir "$n")/log/join.out"
        ctl "$n" stop_app >>"$out" 2>&1 || die "stop_app on $(node_name "$n") failed: $(tail -n 5 "$out")"
        ctl "$n" reset >>"$out" 2>&1 || die "reset of $(node_name "$n") failed: $(tail -n 5 "$out")"
        ctl "$n" join_cluster "$(node_name 1)" >>"$out" 2>&1 ||
            die "$(node_name "$n") could not join $(node_name 1): $(tail -n 5 "$out")"
        ctl "$n" start_app >>"$out" 2>&1 || die "start_app on $(node_name "$n") failed: $(tail -n 5 "$out")"
        await "$(node_name "$n")" ctl "$n" await_startup || die "$(node_name "$n") not up after joining"
    done
    await "three running members" three_running ||
        die "the cluster does not show three running nodes within ${CLUSTER_TIMEOUT}s: $(members_of 1 | tr '\n' ' ')"
    for n in "${NODES[@]}"; do
        await "management on $(mgmt_port "$n")" curl -fs -u guest:guest "http://127.0.0.1:$(mgmt_port "$n")/api/overview" ||
            die "management API of $(node_name "$n") not answering on $(mgmt_port "$n")"
    done
    log "cluster up: $(members_of 1 | sort | tr '\n' ' ')"
}

three_running() { [ "$(members_of 1 | wc -l)" -eq 3 ]; }

cmd_stop() {
    local pid
    for n in "${NODES[@]}"; do
        pid=$(node_pid "$n") || continue
        log "stopping $(node_name "$n")"
        ctl "$n" stop >/dev/null 2>&1 || true
        # The CLI can fail (a busy machine, a lost cookie): then the VM by its pid,
        # SIGTERM (a clean stop), and kill -9 after 30 s.
        if alive "$n"; then kill -TERM "$pid" 2>/dev/null || true; fi
        for _ in $(seq 1 30); do alive "$n" || break; sleep 1; done
        if alive "$n"; then kill -9 "$pid" 2>/dev/null || true; sleep 1; fi
    done
    # A node that was killed and not restarted leaves only its files.
    if [ "${1:-}" = "--purge" ]; then
        for n in "${NODES[@]}"; do
            ! alive "$n" || die "$(node_name "$n") still runs; not deleting its data"
        done
        log "deleting $CLUSTER_DIR"
        rm -rf "$CLUSTER_DIR"
    fi
}

cmd_status() {
    local status=0
    for n in "${NODES[@]}"; do
        if alive "$n" || api_up "$n"; then
            echo "$(node_name "$n") running (AMQP $(amqp_port "$n"), management $(mgmt_port "$n"))"
        else
            echo "$(node_name "$n") not running"
            status=1
        fi
    done
    for n in "${NODES[@]}"; do
        if api_up "$n"; then
            echo "members running: $(members_of "$n" | sort | tr '\n' ' ' | sed 's/ $//')"
            break
        fi
    done
    return "$status"
}

cmd_urls() {
    local vhost="${1:-%2f}" out=""
    for n in "${NODES[@]}"; do
        out+="${out:+,}amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/$vhost"
    done
    echo "$out"
}

cmd_pid() {
    local n="${1:?node number 1-3}"
    [ -s "$(node_dir "$n")/pid" ] || die "no pid file for $(node_name "$n")"
    cat "$(node_dir "$n")/pid"
}

cmd_leader() { # vhost queue
    local vhost="${1:?vhost}" queue="${2:?queue}" leader="" path
    path=$(python3 -c 'import sys, urllib.parse as u; print("queues/" + u.quote(sys.argv[1], safe="") + "/" + u.quote(sys.argv[2], safe=""))' "$vhost" "$queue")
    for n in "${NODES[@]}"; do
        leader=$(api "$n" "$path" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("leader") or "")' 2>/dev/null) || leader=""
        [ -n "$leader" ] && break
    done
    [ -n "$leader" ] || die "no leader known for queue $queue in vhost $vhost"
    for n in "${NODES[@]}"; do
        [ "$leader" = "$(node_name "$n")" ] && { echo "$n"; return 0; }
    done
    die "queue $queue is led by $leader, not a node of this cluster"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) shift; cmd_stop "$@" ;;
    status) cmd_status ;;
    urls) shift; cmd_urls "$@" ;;
    pid) shift; cmd_pid "$@" ;;
    leader) shift; cmd_leader "$@" ;;
    ctl) shift; n="${1:?node number}"; shift; ctl "$n" "$@" ;;
    *) die "usage: scripts/cluster.sh start|stop [--purge]|status|urls [vhost]|pid N|leader VHOST QUEUE|ctl N ARGS…" ;;
esac
