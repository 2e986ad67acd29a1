#!/usr/bin/env bash
# The console's benchmark (SPEC §4.8, issue 18; not a timed test): with a registry of
# 1,000,000 accounts and 5,000,000 messages of history, how fast the console answers
# a search by phone, by account and by message id, a message's timeline, an account's
# page and the start page. Report: docs/performance.md, "Console at 1,000,000 accounts
# and 5,000,000 messages".
#
#   scripts/bench-console.sh            # build, load, measure, EXPLAIN, clean up
#
# What it does, each time from scratch (idempotent: it drops what an earlier run left):
#  1. builds the release binaries of validator, notifier, billing-export and console;
#  2. creates the database $BENCH_DB and the RabbitMQ vhost $BENCH_VHOST (the start
#     page asks the broker for the dead-letter depths), applies every service's
#     migrations with `<binary> migrate`;
#  3. loads synthetic history straight into the owners' tables with generate_series
#     (scripts/bench-console-data.sql: the data's shape is described at its top),
#     indexes built after the load, then VACUUM ANALYZE;
#  4. adds an operator with `console add-user`, starts the release console on
#     $BENCH_ADDR with a CONSOLE_API_TOKEN, and times BENCH_N (300) requests of each
#     kind after BENCH_WARMUP (30), one client, one after another
#     (scripts/bench-console.py): the JSON API with the bearer token for the searches,
#     the timeline and the account; the start page `/` (HTML; it has no API
#     equivalent) and the search page with a session logged in through /login;
#  5. prints `EXPLAIN (ANALYZE, BUFFERS)` of every query those requests run, with
#     parameters drawn from the data (as prepared statements executed six times
#     first, so the plan shown is the one the server keeps for the console's
#     prepared statements);
#  6. stops the console, drops the database and the vhost (BENCH_KEEP=1 keeps them).
#
# Knobs: BENCH_ACCOUNTS (1000000), BENCH_MESSAGES (5000000), BENCH_N, BENCH_WARMUP,
# BENCH_OUT (directory for results.json, explain.txt, console.log; default a new
# directory under /tmp), BENCH_SKIP_LOAD=1 (reuse a database kept by BENCH_KEEP=1;
# migrations added since are applied), BENCH_SKIP_BUILD=1 (binaries already built),
# BENCH_DB (meter_bench_console), BENCH_VHOST (bench-console), BENCH_ADDR
# (127.0.0.1:18084). Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and
# RabbitMQ on 127.0.0.1:5672 (guest; `rabbitmqctl` as root for the vhost).
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS="${BENCH_ACCOUNTS:-1000000}"
MESSAGES="${BENCH_MESSAGES:-5000000}"
DB="${BENCH_DB:-meter_bench_console}"
VHOST="${BENCH_VHOST:-bench-console}"
ADDR="${BENCH_ADDR:-127.0.0.1:18084}"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/bench-console.XXXXXX)}"
mkdir -p "$OUT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/release"
PSQL=(psql -h 127.0.0.1 -U postgres -X -q -v ON_ERROR_STOP=1)

export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST"
export RUST_LOG="${RUST_LOG:-warn}"
TOKEN="bench-console-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PASSWORD="bench-password-$RANDOM$RANDOM"

console_pid=""
cleanup() {
    if [[ -n "$console_pid" ]]; then
        kill "$console_pid" 2>/dev/null || true
        wait "$console_pid" 2>/dev/null || true
    fi
    if [[ "${BENCH_KEEP:-0}" != 1 ]]; then
        "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
        rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    echo "== build (release)" >&2
    cargo build --release --locked -p validator -p notifier -p billing-export -p console >&2
fi

if [[ "${BENCH_SKIP_LOAD:-0}" != 1 ]]; then
    echo "== database $DB, vhost $VHOST" >&2
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
    rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
    rabbitmqctl -q add_vhost "$VHOST"
    rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*'
fi
# Every service's migrations (a kept database gets the ones added since).
for svc in validator notifier billing-export console; do
    "$BIN/$svc" migrate
done
if [[ "${BENCH_SKIP_LOAD:-0}" != 1 ]]; then
    echo "== load: $ACCOUNTS accounts, $MESSAGES messages" >&2
    start=$(date +%s)
    "${PSQL[@]}" -d "$DB" -v accounts="$ACCOUNTS" -v messages="$MESSAGES" \
        -f scripts/bench-console-data.sql 2>&1 | tee "$OUT/load.log" >&2
    echo "loaded in $(($(date +%s) - start)) s" | tee -a "$OUT/load.log" >&2
fi
"${PSQL[@]}" -d "$DB" -c "
    SELECT 'validator.meters', count(*) FROM validator.meters
    UNION ALL SELECT 'validator.messages', count(*) FROM validator.messages
    UNION ALL SELECT 'validator.readings', count(*) FROM validator.readings
    UNION ALL SELECT 'notifier.deliveries', count(*) FROM notifier.deliveries
    UNION ALL SELECT 'billing.readings', count(*) FROM billing.readings" | tee "$OUT/rows.txt" >&2
"${PSQL[@]}" -d "$DB" -At -c "
    SELECT relname, pg_size_pretty(pg_total_relation_size(c.oid)) FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE nspname IN ('validator', 'notifier', 'billing') AND relkind = 'r'
    ORDER BY pg_total_relation_size(c.oid) DESC" | tee "$OUT/sizes.txt" >&2

echo "== samples" >&2
samples="$OUT/samples"
mkdir -p "$samples"
"${PSQL[@]}" -d "$DB" -At -c "SELECT sender FROM validator.messages TABLESAMPLE SYSTEM (0.1) REPEATABLE (1) LIMIT 1000" > "$samples/phones.txt"
"${PSQL[@]}" -d "$DB" -At -c "SELECT account FROM validator.messages TABLESAMPLE SYSTEM (0.1) REPEATABLE (2) WHERE account IS NOT NULL LIMIT 1000" > "$samples/accounts.txt"
"${PSQL[@]}" -d "$DB" -At -c "SELECT message_id FROM validator.messages TABLESAMPLE SYSTEM (0.1) REPEATABLE (3) LIMIT 1000" > "$samples/messages.txt"

echo "== console on $ADDR" >&2
"${PSQL[@]}" -d "$DB" -c "DELETE FROM console.login_failures"
printf '%s\n' "$PASSWORD" | "$BIN/console" add-user bench --role operator
HTTP_ADDR="$ADDR" CONSOLE_API_TOKEN="$TOKEN" CONSOLE_INSECURE_COOKIES=true \
    "$BIN/console" serve > "$OUT/console.log" 2>&1 &
console_pid=$!
for _ in $(seq 100); do
    curl -fsS "http://$ADDR/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://$ADDR/readyz" >/dev/null

echo "== requests (load average before: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
echo "| kind | n | p50 ms | p95 ms | p99 ms | max ms | mean body B | non-200 |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|"
BENCH_TOKEN="$TOKEN" BENCH_LOGIN=bench BENCH_PASSWORD="$PASSWORD" \
    python3 scripts/bench-console.py "http://$ADDR" "$samples" "$OUT/results.json"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== EXPLAIN (ANALYZE, BUFFERS) -> $OUT/explain.txt" >&2
phone=$(head -1 "$samples/phones.txt")
account=$(head -1 "$samples/accounts.txt")
rejected=$("${PSQL[@]}" -d "$DB" -At -c "SELECT message_id FROM validator.messages WHERE sender = '$phone' AND outcome = 'rejected' LIMIT 1")
accepted=$("${PSQL[@]}" -d "$DB" -At -c "SELECT message_id FROM validator.messages WHERE sender = '$phone' AND outcome = 'accepted' ORDER BY received_at DESC LIMIT 1")
reading=$("${PSQL[@]}" -d "$DB" -At -c "SELECT reading_id FROM validator.messages WHERE message_id = '$accepted'")
"${PSQL[@]}" -d "$DB" -v phone="$phone" -v account="$account" -v rejected="$rejected" \
    -v accepted="$accepted" -v reading="$reading" \
    -f scripts/bench-console-explain.sql > "$OUT/explain.txt" 2>&1
cat "$OUT/explain.txt"
echo "results: $OUT" >&2
