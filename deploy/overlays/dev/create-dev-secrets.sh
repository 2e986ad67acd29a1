#!/usr/bin/env bash
# Creates (or updates) the Secrets the dev overlay needs, from what the operators
# generated plus random tokens:
#
#   meter-{ingest,validator,notifier,billing-export,console}-secrets   (deploy/base/secret.example.yaml)
#   kannel-secrets                                                      (kannel/kannel-secrets.example/)
#
# Run it after the first `kubectl apply` of the dev overlay: it waits until
# CloudNativePG has created `meter-db-app` and the RabbitMQ operator
# `meter-rabbitmq-default-user`. Pods that started without their Secret pick it up on
# their next retry. Tokens already in the Secrets are kept, so re-running is safe.
#
#   deploy/overlays/dev/create-dev-secrets.sh [NAMESPACE]    (default meter-dev)
#
# Dev only: every service shares the database owner and the broker's default user.
# In prod each service gets its own role and broker user (docs/operations-deploy.md,
# deploy/sql/roles.sql). ingest gets no DATABASE_URL: it never opens the database.
# Walked in containers by scripts/deploy-walk.sh (its kubectl answered locally).
set -euo pipefail

NS=${1:-meter-dev}
TIMEOUT=${TIMEOUT:-600}

log() { echo "create-dev-secrets: $*" >&2; }

wait_for_secret() { # name -> returns once it exists
    local deadline=$((SECONDS + TIMEOUT))
    until kubectl -n "$NS" get secret "$1" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { log "timed out waiting for Secret $1"; exit 1; }
        sleep 5
    done
}

key() { # secret key -> decoded value, empty if absent
    kubectl -n "$NS" get secret "$1" -o "jsonpath={.data.$2}" 2>/dev/null | base64 -d 2>/dev/null || true
}

urlencode() { # byte-wise, so non-ASCII comes out as its UTF-8 %XX sequence
    local LC_ALL=C s=$1 out= c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in [a-zA-Z0-9.~_-]) out+=$c ;; *) printf -v c '%%%02X' "'$c"; out+=$c ;; esac
    done
    printf '%s' "$out"
}

random_token() { head -c 24 /dev/urandom | base64 | tr -d '/+=' ; }

keep_or_new() { # secret key -> the existing value, or a new random one
    local v
    v=$(key "$1" "$2")
    [[ -n $v ]] && printf '%s' "$v" || random_token
}

apply_secret() { # name, then --from-literal/--from-file arguments
    local name=$1
    shift
    kubectl -n "$NS" create secret generic "$name" "$@" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    log "Secret $name applied"
}

log "waiting for the operators' Secrets in namespace $NS"
wait_for_secret meter-db-app
wait_for_secret meter-rabbitmq-default-user

DATABASE_URL=$(key meter-db-app uri)
[[ -n $DATABASE_URL ]] || { log "meter-db-app has no key 'uri' (CloudNativePG too old?)"; exit 1; }
AMQP_URL="amqp://$(urlencode "$(key meter-rabbitmq-default-user username)"):$(urlencode "$(key meter-rabbitmq-default-user password)")@meter-rabbitmq:5672/%2f"

INGEST_TOKEN=$(keep_or_new meter-ingest-secrets INGEST_TOKEN)
EXPORT_TOKEN=$(keep_or_new meter-billing-export-secrets EXPORT_TOKEN)
KANNEL_PASSWORD=$(keep_or_new meter-notifier-secrets KANNEL_PASSWORD)
KANNEL_ADMIN_PASSWORD=$(key kannel-secrets admin.conf | sed -n 's/^admin-password = //p')
[[ -n $KANNEL_ADMIN_PASSWORD ]] || KANNEL_ADMIN_PASSWORD=$(random_token)

apply_secret meter-ingest-secrets \
    --from-literal=AMQP_URL="$AMQP_URL" --from-literal=INGEST_TOKEN="$INGEST_TOKEN"
apply_secret meter-validator-secrets \
    --from-literal=AMQP_URL="$AMQP_URL" --from-literal=DATABASE_URL="$DATABASE_URL"
apply_secret meter-notifier-secrets \
    --from-literal=AMQP_URL="$AMQP_URL" --from-literal=DATABASE_URL="$DATABASE_URL" \
    --from-literal=KANNEL_PASSWORD="$KANNEL_PASSWORD"
apply_secret meter-billing-export-secrets \
    --from-literal=AMQP_URL="$AMQP_URL" --from-literal=DATABASE_URL="$DATABASE_URL" \
    --from-literal=EXPORT_TOKEN="$EXPORT_TOKEN"
# The console downloads the missing-readings report from billing-export with one of
# its EXPORT_TOKENs.
apply_secret meter-console-secrets \
    --from-literal=AMQP_URL="$AMQP_URL" --from-literal=DATABASE_URL="$DATABASE_URL" \
    --from-literal=CONSOLE_EXPORT_TOKEN="$EXPORT_TOKEN"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'admin-password = %s\n' "$KANNEL_ADMIN_PASSWORD" >"$tmp/admin.conf"
printf 'password = %s\n' "$KANNEL_PASSWORD" >"$tmp/sendsms-user.conf"
printf 'get-url = "http://ingest:8080/v1/sms/kannel?token=%s&id=%%I&from=%%p&to=%%P&ts=%%T&text=%%a"\n' \
    "$INGEST_TOKEN" >"$tmp/get-url.conf"
apply_secret kannel-secrets \
    --from-file=admin.conf="$tmp/admin.conf" \
    --from-file=sendsms-user.conf="$tmp/sendsms-user.conf" \
    --from-file=get-url.conf="$tmp/get-url.conf"

log "done. INGEST_TOKEN for manual calls: kubectl -n $NS get secret meter-ingest-secrets -o jsonpath='{.data.INGEST_TOKEN}' | base64 -d"
log "      EXPORT_TOKEN for the exports: kubectl -n $NS get secret meter-billing-export-secrets -o jsonpath='{.data.EXPORT_TOKEN}' | base64 -d"
