#!/usr/bin/env bash
# The dev overlay walked in real containers, the way docs/operations-deploy.md deploys
# it: `kubectl kustomize deploy/overlays/dev` rendered, its workloads run with
# `podman kube play` from the images scripts/images.sh builds, in a network namespace
# of the walk's own (its loopback only) with a PostgreSQL and a RabbitMQ node of its
# own standing in for the operators'. In the docs' order:
#
#   1. the operators' Secrets (meter-db-app, meter-rabbitmq-default-user), as they
#      make them; then deploy/overlays/dev/create-dev-secrets.sh itself, its kubectl
#      calls answered from those (scripts/deploy_walk.py kubectl);
#   2. the broker policies of the rendered Policy objects (rabbitmqctl set_policy);
#   3. the migration Job's pod: its containers in their order, each must exit 0;
#   4. the five Deployments; each answers its probes' /healthz and /readyz;
#   5. the first console user, as the docs create it (`kubectl exec -i deploy/console
#      -- console add-user …`: here `podman exec -i`), the registry as the docs load it
#      (`kubectl exec -i deploy/validator -- validator import-registry - < FILE`);
#   6. what scripts/run-local.sh --check checks, against the containers: a wrong SMS
#      gets its reply (the notifier's log), a correct one with an address its e-mail
#      (.eml in the notifier's EMAIL_DIR volume) and its export line (with
#      EXPORT_TOKEN; 401 without), the console's login form; and one paper slip typed
#      into the console by a staff member, decided within seconds;
#   7. everything stopped and removed: pods, podman secrets and volumes, the servers.
#
#   scripts/deploy-walk.sh           # needs the images (scripts/images.sh build)
#
# Which transformations of the rendered manifests a local run needs, and nothing else:
# scripts/deploy_walk.py's docstring; the walk prints them. The SMS reach ingest as an
# aggregator's POST /v1/sms (dev's Kannel is not played). The dev overlay keeps the
# reading window of base (15th-25th), so the correct SMS carries a `received_at` on
# the 20th of the last month (a late SMS counts for its period: SPEC 4.1).
set -euo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."
REPO=$PWD
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/scripts/podman/containers.conf}
NS=meter-dev
TAG=dev

log() { printf '==> %s walk: %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'walk: FAILED: %s\n' "$*" >&2; exit 1; }

# Service names the dev overlay's configuration and Secrets use -> the loopback.
HOSTS="ingest validator notifier billing-export console kannel meter-rabbitmq meter-db-rw meter-db-rw.$NS"

if [[ ${1:-} != --inside ]]; then
    [[ $(id -u) -eq 0 ]] || die "needs root (namespaces, rootful podman)"
    missing=()
    for c in podman runc catatonit; do command -v "$c" >/dev/null || missing+=("$c"); done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    for s in ingest validator notifier billing-export console; do
        podman image exists "meter-readings/$s:$TAG" || die "no image meter-readings/$s:$TAG: scripts/images.sh build"
        [[ $(podman image inspect -f '{{index .Labels "org.opencontainers.image.title"}}' "meter-readings/$s:$TAG") == "meter-readings $s" ]] ||
            die "meter-readings/$s:$TAG was not built from deploy/Dockerfile (its label is missing): scripts/images.sh build"
    done
    WALK=$(mktemp -d "${TMPDIR:-/tmp}/meter-walk.XXXXXX")
    chmod 755 "$WALK"
    printf '127.0.0.1\tlocalhost %s\n::1\tlocalhost\n' "$HOSTS" >"$WALK/hosts"
    started=$SECONDS
    set +e
    # A network namespace (its own loopback: ports 5432, 5672, 8080-8084 meet nothing
    # of this machine's) and a mount namespace (its /etc/hosts names the Services).
    unshare --net --mount --fork "$SELF" --inside "$WALK"
    rc=$?
    set -e
    # Whatever the inside left (it removes its own; this is for a walk that died).
    for f in "$WALK"/play/*.yaml; do [[ -e $f ]] && { podman kube down "$f" >/dev/null 2>&1 || true; }; done
    for s in "$WALK"/secrets/*.json; do [[ -e $s ]] && { podman secret rm "$(basename "$s" .json)" >/dev/null 2>&1 || true; }; done
    podman volume rm -f billing-export-exports >/dev/null 2>&1 || true
    [[ ${WALK_KEEP:-0} == 1 ]] || rm -rf "$WALK"
    log "walk $([[ $rc == 0 ]] && echo passed || echo FAILED) in $((SECONDS - started)) s"
    exit $rc
fi

# ---- inside the walk's namespaces ----
WALK=$2
mount --make-rprivate /
mount --bind "$WALK/hosts" /etc/hosts
ip link set lo up
mkdir -p "$WALK/secrets" "$WALK/play" "$WALK/bin"
pids=()
cleanup() {
    set +e
    for f in "$WALK"/play/*.yaml; do [[ -e $f ]] && podman kube down "$f" >/dev/null 2>&1; done
    podman volume rm -f billing-export-exports >/dev/null 2>&1
    for s in "$WALK"/secrets/*.json; do podman secret rm "$(basename "$s" .json)" >/dev/null 2>&1; done
    [[ -n ${PG_BIN:-} ]] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WALK/pg" -m fast stop >/dev/null 2>&1
    [[ -n ${rabbit_started:-} ]] && rabbitmqctl stop >/dev/null 2>&1
    # epmd outlives the node; it listens in this namespace only, and goes with it.
    [[ -n ${rabbit_started:-} ]] && ERL_EPMD_ADDRESS=127.0.0.1 epmd -kill >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT

# 1. PostgreSQL, as CloudNativePG's bootstrap makes it: a database `app` owned by the
#    role `app`, whose password is in the Secret meter-db-app (uri among its keys).
PG_BIN=/usr/lib/postgresql/$(ls /usr/lib/postgresql | sort -V | tail -n 1)/bin
log "PostgreSQL ($PG_BIN) on the walk's 127.0.0.1:5432"
mkdir -p "$WALK/pg" "$WALK/pgsock"
chown postgres:postgres "$WALK/pg" "$WALK/pgsock"
runuser -u postgres -- "$PG_BIN/initdb" -D "$WALK/pg" -U postgres --auth-local=trust \
    --auth-host=scram-sha-256 >"$WALK/initdb.log" 2>&1 || die "initdb: $WALK/initdb.log"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WALK/pg" -l "$WALK/pg/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories=$WALK/pgsock -c max_connections=200" \
    start >/dev/null || die "PostgreSQL did not start: $WALK/pg/postgres.log"
APP_PW=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
runuser -u postgres -- psql -h "$WALK/pgsock" -qc "CREATE ROLE app LOGIN PASSWORD '$APP_PW'" -c "CREATE DATABASE app OWNER app"
python3 scripts/deploy_walk.py secret meter-db-app username=app password="$APP_PW" dbname=app \
    host=meter-db-rw port=5432 uri="postgresql://app:$APP_PW@meter-db-rw.$NS:5432/app" >"$WALK/secrets/meter-db-app.json"

# RabbitMQ: one node, as the operator's, with its default user (administrator) in the
# Secret meter-rabbitmq-default-user.
log "RabbitMQ on the walk's 127.0.0.1:5672"
R=$WALK/rabbitmq
rabbit_env=(env HOME="$R" RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_MNESIA_BASE="$R/mnesia"
    RABBITMQ_LOG_BASE="$R/log" RABBITMQ_CONFIG_FILE="$R/rabbitmq.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$R/enabled_plugins" RABBITMQ_PID_FILE="$R/pid"
    RABBITMQ_CONF_ENV_FILE="$R/rabbitmq-env.conf" ERL_EPMD_ADDRESS=127.0.0.1)
mkdir -p "$R/log"
printf 'listeners.tcp.default = 127.0.0.1:5672\nloopback_users = none\n' >"$R/rabbitmq.conf"
echo '[].' >"$R/enabled_plugins"
: >"$R/rabbitmq-env.conf"
(cd "$R" && exec "${rabbit_env[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server >"$R/server.out" 2>&1) &
pids+=($!)
rabbit_started=1
rabbitmqctl() { (cd "$R" && "${rabbit_env[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl "$@"); }
for _ in $(seq 1 120); do rabbitmqctl -q await_startup -t 5 >/dev/null 2>&1 && break; sleep 1; done
rabbitmqctl -q await_startup -t 5 >/dev/null 2>&1 || die "RabbitMQ did not start: $WALK/rabbitmq"
RMQ_USER=default_user_$(head -c 9 /dev/urandom | base64 | tr -d '/+=')
RMQ_PW=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
rabbitmqctl -q add_user "$RMQ_USER" "$RMQ_PW" >/dev/null
rabbitmqctl -q set_user_tags "$RMQ_USER" administrator >/dev/null
rabbitmqctl -q set_permissions -p / "$RMQ_USER" '.*' '.*' '.*' >/dev/null
rabbitmqctl -q delete_user guest >/dev/null
python3 scripts/deploy_walk.py secret meter-rabbitmq-default-user username="$RMQ_USER" password="$RMQ_PW" \
    host=meter-rabbitmq port=5672 >"$WALK/secrets/meter-rabbitmq-default-user.json"

# The documented script, unchanged, its kubectl answered from $WALK/secrets.
log "deploy/overlays/dev/create-dev-secrets.sh $NS"
printf '#!/bin/sh\nexec python3 %q kubectl "$@"\n' "$REPO/scripts/deploy_walk.py" >"$WALK/bin/kubectl"
chmod +x "$WALK/bin/kubectl"
WALK_SECRETS="$WALK/secrets" WALK_REAL_KUBECTL=$(command -v kubectl) PATH="$WALK/bin:$PATH" TIMEOUT=10 \
    deploy/overlays/dev/create-dev-secrets.sh "$NS" 2>&1 | sed 's/^/    /' >&2
for s in "$WALK"/secrets/*.json; do
    name=$(basename "$s" .json)
    case $name in meter-db-app | meter-rabbitmq-default-user) continue ;; esac
    podman secret rm "$name" >/dev/null 2>&1 || true
    python3 scripts/deploy_walk.py data "$s" | podman secret create "$name" - >/dev/null
done
secret_key() { python3 scripts/deploy_walk.py key "$WALK/secrets/$1.json" "$2"; }

# The rendered overlay, cut for podman.
log "kubectl kustomize deploy/overlays/dev"
kubectl kustomize deploy/overlays/dev >"$WALK/rendered.yaml"
python3 scripts/deploy_walk.py play "$WALK/rendered.yaml" "$WALK/play"
log "transformations (and nothing else):"
sed 's/^/    /' "$WALK/play/transformations.txt" >&2

# 2. The broker policies, as the topology operator would apply the Policy objects.
while IFS=$'\t' read -r name pattern apply priority definition; do
    rabbitmqctl -q set_policy -p / --apply-to "$apply" --priority "$priority" "$name" "$pattern" "$definition" </dev/null >/dev/null
    log "policy $name ($pattern): $definition"
done <"$WALK/play/policies.tsv"

# 3. The migration Job.
log "the migration Job (its pod)"
t=$SECONDS
podman kube play --configmap "$(cat "$WALK/play/configmaps.list")" "$WALK/play/migrate.yaml" >/dev/null
main=meter-migrate-migrate-billing-export
code=$(timeout 900 podman wait "$main") || die "the Job's pod did not finish (podman pod logs meter-migrate)"
podman logs "$main" 2>&1 | tail -n 3 | sed 's/^/    /' >&2
[[ $code == 0 ]] || die "migrate-billing-export exited $code"
order=$(runuser -u postgres -- psql -h "$WALK/pgsock" -d app -tAc "
    SELECT string_agg(s, ' < ' ORDER BY first) FROM (
        SELECT 'validator' s, min(installed_on) first FROM validator._sqlx_migrations UNION ALL
        SELECT 'notifier', min(installed_on) FROM notifier._sqlx_migrations UNION ALL
        SELECT 'console', min(installed_on) FROM console._sqlx_migrations UNION ALL
        SELECT 'billing', min(installed_on) FROM billing._sqlx_migrations) o")
[[ $order == "validator < notifier < console < billing" ]] || die "migrations in the order $order"
log "the Job's containers ran in order (migrate-ingest, then the schemas: $order) and exited 0, in $((SECONDS - t)) s"
podman kube down "$WALK/play/migrate.yaml" >/dev/null

# 4. The Deployments. podman turns an httpGet probe into `curl` run by a shell inside the
#    container, which a shell-less image cannot do: the walk asks each probe path from
#    outside, as the kubelet does.
t=$SECONDS
for s in ingest validator notifier billing-export console; do
    podman kube play --configmap "$(cat "$WALK/play/configmaps.list")" "$WALK/play/$s.yaml" >/dev/null
done
port() { case $1 in ingest) echo 8080 ;; validator) echo 8081 ;; notifier) echo 8082 ;; billing-export) echo 8083 ;; console) echo 8084 ;; esac; }
ctr() { echo "$1-pod-0-$1"; }
for s in ingest validator notifier billing-export console; do
    for _ in $(seq 1 240); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port "$s")/readyz") == 200 ]] && break
        sleep 0.5
    done
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port "$s")/readyz") == 200 &&
        $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port "$s")/healthz") == 200 ]] ||
        { podman logs "$(ctr "$s")" 2>&1 | tail -n 20 >&2; die "$s not ready"; }
    pid=$(podman inspect -f '{{.State.Pid}}' "$(ctr "$s")")
    log "$s: /healthz and /readyz 200 on :$(port "$s"); uid $(awk '/^Uid:/ {print $2}' "/proc/$pid/status"), root $(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | tail -n 1 | cut -d, -f1)"
done
log "five Deployments ready in $((SECONDS - t)) s"

# 5. The first console user and the registry, as the docs say.
CONSOLE_PW=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$CONSOLE_PW" | podman exec -i "$(ctr console)" /usr/local/bin/console add-user admin --role supervisor >&2
podman exec -i "$(ctr validator)" /usr/local/bin/validator import-registry - --strict \
    <scripts/sample-registry.csv | sed 's/^/    /' >&2

# 6. What run-local.sh --check checks.
INGEST_TOKEN=$(secret_key meter-ingest-secrets INGEST_TOKEN)
EXPORT_TOKEN=$(secret_key meter-billing-export-secrets EXPORT_TOKEN)
PERIOD=$(python3 -c 'import datetime as d; t = d.date.today().replace(day=1) - d.timedelta(days=1); print(t.strftime("%Y-%m"))')
send() { # id text [received_at]
    local at=""
    [[ -n ${3:-} ]] && at=", \"received_at\": \"$3\""
    curl -fsS -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:8080/v1/sms \
        -H "Authorization: Bearer $INGEST_TOKEN" -H 'Content-Type: application/json' \
        -d "{\"message_id\": \"$1\", \"from\": \"+79001234567\", \"to\": \"7377\", \"text\": \"$2\"$at}"
}
[[ $(send walk-1 "1000001 44000") == 202 ]] || die "ingest refused the wrong SMS"
[[ $(send walk-2 "1000002 45100 12100 resident@example.ru" "${PERIOD}-20T12:00:00+05:00") == 202 ]] || die "ingest refused the correct SMS"
log "two SMS accepted by ingest (202)"
export_csv() { curl -fs -H "Authorization: Bearer $EXPORT_TOKEN" "http://127.0.0.1:8083/v1/exports/$PERIOD.csv"; }
ok=""
for _ in $(seq 1 120); do
    if podman logs "$(ctr notifier)" 2>&1 | grep -q "reading_decreased\|SMS reply" &&
        export_csv | grep -q '^1000002,'; then ok=1; break; fi
    sleep 0.5
done
[[ -n $ok ]] || die "no reply in the notifier's log, or the reading not in the export"
log "the wrong SMS: its reply in the notifier's log: $(podman logs "$(ctr notifier)" 2>&1 | grep -m1 -o 'reading_decreased' || echo 'SMS reply')"
log "the correct SMS: in the export of $PERIOD: $(export_csv | grep '^1000002,' | head -n 1)"
rm -rf "$WALK/mail"
for _ in $(seq 1 60); do
    podman cp "$(ctr notifier):/var/spool/notifier/email" "$WALK/mail" >/dev/null 2>&1 &&
        compgen -G "$WALK/mail/*.eml" >/dev/null && break
    rm -rf "$WALK/mail"
    sleep 0.5
done
compgen -G "$WALK/mail/*.eml" >/dev/null || die "no confirmation e-mail in the notifier's EMAIL_DIR"
log "the confirmation e-mail: $(basename "$(ls "$WALK"/mail/*.eml | head -n 1)") in the notifier's EMAIL_DIR volume"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:8083/v1/exports/$PERIOD.csv")
[[ $code == 401 ]] || die "the export without a token answered $code"
log "the export without a token: 401"
curl -fs http://127.0.0.1:8084/login | grep -q 'name="username"' || die "console: no login form"
log "the console's login form"
decision=$(printf '%s\n' "$CONSOLE_PW" | python3 scripts/deploy_walk.py paper http://127.0.0.1:8084 admin 1000003 10100 20100) ||
    die "the paper slip"
log "a paper slip typed into the console as admin: $decision"

log "stopping"
for s in ingest validator notifier billing-export console; do
    t=$SECONDS
    podman kube down "$WALK/play/$s.yaml" >/dev/null
done
log "PASSED: migration Job, five services, first user, registry, SMS x2, paper slip, run-local's checks"
