#!/usr/bin/env bash
# TLS backends for tests: a test CA (and an unrelated second CA), a RabbitMQ node of
# its own with only a TLS listener, and a PostgreSQL cluster of its own with ssl = on
# that refuses connections without TLS. Beside the system's broker and database,
# which stay as they are.
#
#   scripts/tls-backends.sh install     # apt-get install what is missing (idempotent)
#   scripts/tls-backends.sh start       # certificates + both servers; returns when they answer
#                                       # (idempotent: what runs is left running)
#   scripts/tls-backends.sh stop        # stops both servers (the certificates stay)
#   scripts/tls-backends.sh vhost NAME  # a vhost NAME on the TLS node, guest allowed
#   scripts/tls-backends.sh drop-vhost NAME
#   scripts/tls-backends.sh env         # prints DIR/env (see below)
#
# Environment (defaults):
#   TLS_BACKENDS_DIR=/var/tmp/meter-tls-backends  everything lives here
#   TLS_AMQPS_PORT=25671      the node's TLS listener (it has no plaintext one)
#   TLS_RABBIT_DIST_PORT=25672  its Erlang distribution port
#   TLS_RABBIT_NODENAME=meter-tls@localhost
#   TLS_PG_PORT=25432         the cluster's port (hostssl only)
#   TLS_START_TIMEOUT=90      seconds
# start writes DIR/env (shell syntax, read by e2e/tests/tls.rs):
#   TLS_CA_FILE, TLS_OTHER_CA_FILE, TLS_SERVER_CERT, TLS_SERVER_KEY,
#   TLS_OTHER_SERVER_CERT, TLS_OTHER_SERVER_KEY (a server certificate from the other CA),
#   TLS_AMQPS_BASE=amqps://guest:guest@127.0.0.1:PORT, TLS_PG_BASE=postgres://postgres@127.0.0.1:PORT
# Server certificates name localhost and 127.0.0.1. Concurrent calls are serialised
# (flock on DIR/lock). See docs/operations-deploy.md, "TLS".
set -euo pipefail

DIR=${TLS_BACKENDS_DIR:-/var/tmp/meter-tls-backends}
AMQPS_PORT=${TLS_AMQPS_PORT:-25671}
DIST_PORT=${TLS_RABBIT_DIST_PORT:-25672}
NODENAME=${TLS_RABBIT_NODENAME:-meter-tls@localhost}
PG_PORT=${TLS_PG_PORT:-25432}
START_TIMEOUT=${TLS_START_TIMEOUT:-90}
RABBIT_BIN=/usr/lib/rabbitmq/bin

die() { echo "tls-backends.sh: $*" >&2; exit 1; }
log() { echo "tls-backends.sh: $*" >&2; }

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo

pg_bin() {
    local version
    version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
    [[ -n $version ]] || die "PostgreSQL is not installed (scripts/tls-backends.sh install)"
    echo "/usr/lib/postgresql/$version/bin"
}

# PostgreSQL refuses to run as root: as root, its commands run as the postgres user.
as_pg() { # (in DIR, which the postgres user may enter)
    if [[ $(id -u) -eq 0 ]]; then (cd "$DIR" && runuser -u postgres -- "$@"); else (cd "$DIR" && "$@"); fi
}

# The node's own environment: its config, plugins (none), data, logs, cookie, ports.
rabbit_env() {
    export HOME="$DIR/rabbitmq/home"
    export RABBITMQ_NODENAME="$NODENAME"
    export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq/rabbitmq-env.conf"
    export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/rabbitmq/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbitmq/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$DIR/rabbitmq/mnesia"
    export RABBITMQ_LOG_BASE="$DIR/rabbitmq/log"
    export RABBITMQ_PID_FILE="$DIR/rabbitmq/pid"
    export RABBITMQ_DIST_PORT="$DIST_PORT"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

# In DIR: an Erlang crash dump lands in the working directory.
rabbitmqctl() { (cd "$DIR" && rabbit_env && "$RABBIT_BIN/rabbitmqctl" -n "$NODENAME" "$@"); }

cmd_install() {
    local missing=()
    for p in openssl rabbitmq-server postgresql; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing ${missing[*]}"
    local created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # keep Debian from starting system-wide daemons we do not want
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local rc=0
    $SUDO apt-get update -qq || rc=$?
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    if [[ $created_policy -eq 1 ]]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
    [[ $rc -eq 0 ]] || die "apt-get failed (rc $rc)"
}

cert_valid() { # file -> 0 if it exists and is valid for at least another day
    [[ -s $1 ]] && openssl x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1
}

new_ca() { # name CN
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -keyout "$DIR/certs/$1.key" -out "$DIR/certs/$1.pem" -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

new_server() { # name ca
    local c="$DIR/certs"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$c/$1.key" -out "$c/$1.csr" -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$c/$1.ext"
    openssl x509 -req -in "$c/$1.csr" -CA "$c/$2.pem" -CAkey "$c/$2.key" -CAcreateserial \
        -days 30 -out "$c/$1.pem" -extfile "$c/$1.ext" 2>/dev/null
    rm -f "$c/$1.csr" "$c/$1.ext"
    chmod 644 "$c/$1.key" # test keys: the servers (other users) and the SMTP sink read them
}

ensure_certs() { # -> 0 if they were (re)made
    if cert_valid "$DIR/certs/ca.pem" && cert_valid "$DIR/certs/server.pem" &&
        cert_valid "$DIR/certs/other-ca.pem" && cert_valid "$DIR/certs/other-server.pem"; then
        return 1
    fi
    log "generating the test CA, an unrelated CA and their server certificates"
    rm -rf "$DIR/certs"
    mkdir -p "$DIR/certs"
    new_ca ca "meter-readings test CA"
    new_server server ca
    new_ca other-ca "an unrelated CA"
    new_server other-server other-ca
    chmod 755 "$DIR/certs"
    return 0
}

rabbit_running() { rabbitmqctl -q status >/dev/null 2>&1; }

start_rabbit() {
    if rabbit_running; then return 0; fi
    [[ -x $RABBIT_BIN/rabbitmq-server ]] || die "RabbitMQ is not installed (scripts/tls-backends.sh install)"
    mkdir -p "$DIR/rabbitmq/home" "$DIR/rabbitmq/mnesia" "$DIR/rabbitmq/log"
    : >"$DIR/rabbitmq/rabbitmq-env.conf"
    echo '[].' >"$DIR/rabbitmq/enabled_plugins"
    cat >"$DIR/rabbitmq/rabbitmq.conf" <<CONF
# generated by scripts/tls-backends.sh: TLS only, no management plugin
listeners.tcp = none
listeners.ssl.1 = 127.0.0.1:$AMQPS_PORT
ssl_options.cacertfile = $DIR/certs/ca.pem
ssl_options.certfile = $DIR/certs/server.pem
ssl_options.keyfile = $DIR/certs/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
log.console = false
log.file.level = warning
CONF
    log "starting RabbitMQ node $NODENAME (amqps on 127.0.0.1:$AMQPS_PORT)"
    # 9>&-: the daemon must not inherit (and hold for ever) the lock of `locked`.
    (cd "$DIR/rabbitmq" && rabbit_env && "$RABBIT_BIN/rabbitmq-server" -detached >"$DIR/rabbitmq/log/start.out" 2>&1 9>&-) || true
    local deadline=$((SECONDS + START_TIMEOUT))
    until rabbitmqctl -q await_startup >/dev/null 2>&1; do
        [[ $SECONDS -lt $deadline ]] || die "RabbitMQ node $NODENAME did not start; see $DIR/rabbitmq/log"
        sleep 1
    done
}

stop_rabbit() {
    if rabbit_running; then
        log "stopping RabbitMQ node $NODENAME"
        # with the pid file, stop returns once the OS process has exited
        rabbitmqctl -q stop "$DIR/rabbitmq/pid" >/dev/null 2>&1 || true
    fi
}

pg_running() { [[ -d $DIR/pg/data ]] && as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pg/data" status >/dev/null 2>&1; }

start_pg() {
    if pg_running; then return 0; fi
    local bin
    bin=$(pg_bin)
    mkdir -p "$DIR/pg/sock"
    if [[ ! -s $DIR/pg/data/PG_VERSION ]]; then
        rm -rf "$DIR/pg/data"
        mkdir -p "$DIR/pg/data"
        if [[ $(id -u) -eq 0 ]]; then chown -R postgres: "$DIR/pg"; fi
        as_pg "$bin/initdb" -D "$DIR/pg/data" -U postgres --auth=trust -E UTF8 >"$DIR/pg/initdb.out" 2>&1 ||
            die "initdb failed; see $DIR/pg/initdb.out"
    fi
    # The server's key must belong to the server's user, readable by it alone.
    cp "$DIR/certs/server.pem" "$DIR/pg/data/server.crt"
    cp "$DIR/certs/server.key" "$DIR/pg/data/server.key"
    chmod 600 "$DIR/pg/data/server.key"
    if [[ $(id -u) -eq 0 ]]; then chown -R postgres: "$DIR/pg"; fi
    cat >"$DIR/pg/data/pg_hba.conf" <<HBA
# generated by scripts/tls-backends.sh: TLS or nothing over TCP
local     all all              trust
hostssl   all all 127.0.0.1/32 trust
hostnossl all all 0.0.0.0/0    reject
HBA
    log "starting PostgreSQL (ssl on 127.0.0.1:$PG_PORT)"
    as_pg "$bin/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/postgres.log" -w -t "$START_TIMEOUT" \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$DIR/pg/sock -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c max_connections=60 -c shared_buffers=32MB -c fsync=off -c synchronous_commit=off" \
        start >/dev/null 9>&- || die "PostgreSQL did not start; see $DIR/pg/postgres.log"
}

stop_pg() {
    if pg_running; then
        log "stopping PostgreSQL in $DIR/pg"
        as_pg "$(pg_bin)/pg_ctl" -D "$DIR/pg/data" -m fast -w stop >/dev/null || true
    fi
}

write_env() {
    cat >"$DIR/env" <<ENV
TLS_CA_FILE=$DIR/certs/ca.pem
TLS_OTHER_CA_FILE=$DIR/certs/other-ca.pem
TLS_SERVER_CERT=$DIR/certs/server.pem
TLS_SERVER_KEY=$DIR/certs/server.key
TLS_OTHER_SERVER_CERT=$DIR/certs/other-server.pem
TLS_OTHER_SERVER_KEY=$DIR/certs/other-server.key
TLS_AMQPS_BASE=amqps://guest:guest@127.0.0.1:$AMQPS_PORT
TLS_PG_BASE=postgres://postgres@127.0.0.1:$PG_PORT
ENV
}

locked() { # run "$@" holding DIR/lock
    mkdir -p "$DIR"
    chmod 755 "$DIR"
    exec 9>"$DIR/lock"
    flock 9
    "$@"
}

cmd_start() {
    command -v openssl >/dev/null || die "openssl missing (scripts/tls-backends.sh install)"
    if ensure_certs; then
        # servers started with older certificates would present those
        stop_rabbit
        stop_pg
    fi
    start_rabbit
    start_pg
    write_env
    log "ready: $DIR/env"
}

cmd_stop() {
    stop_rabbit
    stop_pg
}

cmd_vhost() {
    local name=$1
    [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "vhost name: letters, digits, _ . - only"
    rabbitmqctl -q add_vhost "$name" >/dev/null 2>&1 || true
    rabbitmqctl -q set_permissions -p "$name" guest '.*' '.*' '.*' >/dev/null ||
        die "cannot create vhost $name on $NODENAME"
}

cmd_drop_vhost() {
    rabbitmqctl -q delete_vhost "$1" >/dev/null 2>&1 || true
}

case "${1:-}" in
    install) cmd_install ;;
    start) locked cmd_start ;;
    stop) locked cmd_stop ;;
    vhost) [[ $# -eq 2 ]] || die "usage: vhost NAME"; cmd_vhost "$2" ;;
    drop-vhost) [[ $# -eq 2 ]] || die "usage: drop-vhost NAME"; cmd_drop_vhost "$2" ;;
    env) cat "$DIR/env" ;;
    *) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
