#!/usr/bin/env bash
# Runs the whole system locally on a Debian/Ubuntu machine: installs what is missing,
# starts PostgreSQL and RabbitMQ, builds, loads a sample registry, and starts the four
# services in the foreground (Ctrl-C stops them all). Replies go to the notifier's
# log (SMS_GATEWAY=log), e-mails to .local/mail/*.eml, exports to .local/exports.
#
#   scripts/run-local.sh           # run until Ctrl-C
#   scripts/run-local.sh --check   # start, send one SMS of each kind, check the effects, stop
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_toolchain
start_postgres
start_rabbitmq

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
log "building"
cargo build --workspace --bins --locked
BIN="$CARGO_TARGET_DIR/debug"

STATE="$PWD/.local"
mkdir -p "$STATE/mail" "$STATE/exports" "$STATE/logs"
DB="${LOCAL_DATABASE:-meter}"
if [ "${1:-}" = "--check" ]; then
    # The check starts from an empty database so that its effects are its own.
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)"
    rm -f "$STATE"/mail/*.eml
fi
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 ||
    psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$DB\""

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$DB}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export INGEST_TOKEN="${INGEST_TOKEN:-dev-ingest-token-0123}"
# The exports need a bearer token of EXPORT_TOKEN (tokens: at least 16 characters).
export EXPORT_TOKEN="${EXPORT_TOKEN:-dev-export-token-0123}"
export EMAIL_DIR="${EMAIL_DIR:-$STATE/mail}"
export EXPORT_DIR="${EXPORT_DIR:-$STATE/exports}"
export SMS_GATEWAY="${SMS_GATEWAY:-log}"
export RUST_LOG="${RUST_LOG:-info}"
# The demo accepts readings on any day; production keeps the 15th–25th.
export WINDOW_START_DAY="${WINDOW_START_DAY:-1}"
export WINDOW_END_DAY="${WINDOW_END_DAY:-31}"

log "migrations and sample registry"
for svc in ingest validator notifier billing-export; do "$BIN/$svc" migrate; done
"$BIN/validator" import-registry scripts/sample-registry.csv

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop_all EXIT INT TERM
for svc in ingest validator notifier billing-export; do
    "$BIN/$svc" serve >"$STATE/logs/$svc.log" 2>&1 &
    pids+=($!)
done

for port in 8080 8081 8082 8083; do
    for _ in $(seq 1 120); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.5; done
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || die "service on :$port not ready (see $STATE/logs)"
done

send() { # text [message id]
    local id=""
    [ -n "${2:-}" ] && id="\"message_id\": \"$2\", "
    curl -fsS -X POST http://127.0.0.1:8080/v1/sms -H "Authorization: Bearer $INGEST_TOKEN" \
        -H 'Content-Type: application/json' \
        -d "{$id\"from\": \"+79001234567\", \"to\": \"7377\", \"text\": \"$1\"}"
    echo
}

export_csv() { # period
    curl -fs -H "Authorization: Bearer $EXPORT_TOKEN" "http://127.0.0.1:8083/v1/exports/$1.csv"
}

if [ "${1:-}" = "--check" ]; then
    log "check: one wrong SMS, one correct SMS with an e-mail"
    send "1000001 44000" "check-$$-1"
    send "1000002 45100 12100 resident@example.ru" "check-$$-2"
    period=$(date +%Y-%m)
    for _ in $(seq 1 60); do
        grep -q "reading_decreased\|SMS reply" "$STATE/logs/notifier.log" 2>/dev/null &&
            ls "$EMAIL_DIR"/*.eml >/dev/null 2>&1 &&
            export_csv "$period" | grep -q '^1000002,' && break
        sleep 0.5
    done
    grep -q "reading_decreased\|SMS reply" "$STATE/logs/notifier.log" || die "no reply in the notifier log"
    ls "$EMAIL_DIR"/*.eml >/dev/null 2>&1 || die "no confirmation e-mail in $EMAIL_DIR"
    export_csv "$period" | grep -q '^1000002,' || die "reading not in the export"
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:8083/v1/exports/$period.csv")
    [ "$code" = 401 ] || die "the export without a token answered $code, not 401"
    log "check passed: reply logged, e-mail written, reading exported (and not without a token)"
    exit 0
fi

cat <<MSG

The system is running (logs in $STATE/logs). Send an SMS as a gateway would:

  curl -X POST http://127.0.0.1:8080/v1/sms -H 'Authorization: Bearer $INGEST_TOKEN' \\
       -H 'Content-Type: application/json' \\
       -d '{"from": "+79001234567", "to": "7377", "text": "1000002 45100 12100 resident@example.ru"}'

A wrong one ("1000001 44000") gets a reply in $STATE/logs/notifier.log; a correct one
with an address writes $EMAIL_DIR/*.eml; readings export with

  curl -H 'Authorization: Bearer $EXPORT_TOKEN' http://127.0.0.1:8083/v1/exports/$(date +%Y-%m).csv

Ctrl-C stops everything.
MSG
wait
