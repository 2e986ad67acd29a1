#!/usr/bin/env bash
# The full fault drills (issue 7, SPEC §5): every drill of e2e/tests/drills.rs — kill -9
# of each service, a RabbitMQ restart, a PostgreSQL restart, billing answering 503, the
# SMTP server down, the SMS gateway answering 503 — each while a stream of SMS flows,
# one at a time (the broker and database restarts take the server from everything
# else: run this on a machine where no other tests are running). Prints the table.
#
# Then the drills past one machine (e2e/tests/cluster_drills.rs): the system with two
# replicas of every service on the project's three-node cluster (scripts/cluster.sh,
# started here if it is not running and stopped afterwards unless CLUSTER_KEEP=1) —
# kill -9 of the validator queue's leader node, kill -9 of one replica of each
# service, a rolling SIGTERM restart — and the racing-replicas check of the rate
# limit, the reply cap and supersession.
#
#   scripts/drills.sh                  # 5,000 messages per drill, 60 s outages
#   DRILL_MESSAGES=1000 DRILL_OUTAGE_SECONDS=5 scripts/drills.sh   # the CI size
#   scripts/drills.sh 'test(/kill9/)'  # a nextest filter: only some drills
#   scripts/drills.sh 'test(/cluster/)'  # only the cluster drills
#
# Knobs (environment): DRILL_MESSAGES, DRILL_OUTAGE_SECONDS, DRILL_RATE (messages/s),
# DRILL_IN_FLIGHT, DRILL_KILL_DOWN_SECONDS, DRILL_DEADLINE_SECONDS, DRILL_SEED — see
# e2e/src/drill.rs and docs/drills.md. Needs what scripts/test.sh sets up (PostgreSQL,
# RabbitMQ with the management plugin, aiosmtpd); run that once first.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

export DRILL_MESSAGES="${DRILL_MESSAGES:-5000}"
export DRILL_OUTAGE_SECONDS="${DRILL_OUTAGE_SECONDS:-60}"
# 50 messages a second: the stream lasts 100 s, so a 60 s outage starting at 30 % of
# it ends while messages are still arriving.
export DRILL_RATE="${DRILL_RATE:-50}"
export DRILL_KILL_DOWN_SECONDS="${DRILL_KILL_DOWN_SECONDS:-5}"
filter="${1:-test(/^drill_|^cluster_/)}"

report="$(mktemp)"
export DRILL_REPORT="$report"

bring_back() {
    # The drills' own guard restarts the broker and the database even when a drill
    # fails; this covers a run that was itself killed half-way.
    $SUDO rabbitmqctl -q start_app >/dev/null 2>&1 || true
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] && { $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true; }
}
trap bring_back EXIT

log "building"
cargo build --workspace --bins --locked
cargo build -p e2e --tests --locked

cluster_was_running=""
scripts/cluster.sh status >/dev/null 2>&1 && cluster_was_running=1
stop_cluster() {
    if [ -z "$cluster_was_running" ] && [ -z "${CLUSTER_KEEP:-}" ]; then
        scripts/cluster.sh stop >/dev/null 2>&1 || true
    fi
}
trap 'bring_back; stop_cluster' EXIT
log "the local cluster (scripts/cluster.sh start)"
scripts/cluster.sh start

log "drills: $DRILL_MESSAGES messages each at $DRILL_RATE/s, outages of ${DRILL_OUTAGE_SECONDS}s"
started=$(date +%s)
status=0
cargo nextest run -p e2e --locked --test drills --test cluster_drills --run-ignored all --test-threads 1 \
    --no-fail-fast --success-output final -E "$filter" || status=$?

echo
echo "Drills: $DRILL_MESSAGES messages per drill, outages ${DRILL_OUTAGE_SECONDS} s, $DRILL_RATE messages/s ($(( $(date +%s) - started )) s in all)"
echo
cat "$report"
rm -f "$report"
exit "$status"
